"""Registries per app: a toy output format over real HTTP and in the OpenAPI enum; two apps
with different models (and DICOM windows) in one process do not interfere."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from app.codecs.outputs import Outputs, default_outputs
from app.main import create_app
from tests.codecs.test_outputs import TOY
from tests.conftest import settings
from tests.nets import UNetSpec, default_card, save_model
from tests.samples import noise, png, tiff


def test_a_toy_format_appears_in_the_schema_and_works_over_http(binary_model: Path) -> None:
    outputs = Outputs([*default_outputs(), TOY])
    with TestClient(create_app(settings(binary_model), outputs=outputs)) as client:
        operation = client.get("/openapi.json").json()["paths"]["/segment"]["post"]
        (fmt,) = [p for p in operation["parameters"] if p["name"] == "format"]
        assert fmt["schema"]["enum"] == [*default_outputs().names(), "shape"]
        answer = client.post("/segment?format=shape", content=tiff(noise(30, 20), noise(30, 20)))
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text == "0:(30, 20)\n1:(30, 20)\n"
        unknown = client.post("/segment?format=jpeg", content=png(noise(30, 20)))
        assert unknown.status_code == 422
        assert "'dicom-seg', 'dicom-sr' or 'shape' (got 'jpeg')" in unknown.json()["detail"]
    with TestClient(create_app(settings(binary_model))) as plain:  # another app: no toy
        assert plain.post("/segment?format=shape", content=png(noise(30, 20))).status_code == 422


def windowed_model(folder: Path) -> Path:
    """The binary test model with a CT window in its card: DICOM decodes differently."""
    spec = UNetSpec(depth=2, base=2)
    path = folder / "windowed.onnx"
    card = default_card(spec, name="windowed", window={"center": 40, "width": 80})
    save_model(path, spec, seed=3, card=card)
    return path


def test_two_apps_with_different_models_do_not_interfere(
    binary_model: Path, tmp_path: Path
) -> None:
    ct = Path(str(get_testdata_file("CT_small.dcm", download=False))).read_bytes()
    query = "/segment?format=probability"

    def alone(model: Path) -> bytes:
        with TestClient(create_app(settings(model))) as client:
            return client.post(query, content=ct).content

    windowed = windowed_model(tmp_path)
    expected = {binary_model: alone(binary_model), windowed: alone(windowed)}
    assert expected[binary_model] != expected[windowed]  # the window matters
    with (
        TestClient(create_app(settings(binary_model))) as a,
        TestClient(create_app(settings(windowed))) as b,
    ):
        for _ in range(2):  # interleaved
            assert a.post(query, content=ct).content == expected[binary_model]
            assert b.post(query, content=ct).content == expected[windowed]
