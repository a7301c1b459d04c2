"""Errors in-process: statuses, one-string bodies, auth, readiness, overload, limits."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient

from app.api.admission import Admission
from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE
from app.main import create_app
from app.service import Service
from tests.conftest import default_engine, settings
from tests.nets import BINARY, build_onnx, random_weights
from tests.samples import bad_corpus, noise, png

IMAGE_PNG = png(noise(60, 90))


def assert_error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    """The status, a JSON {"detail": str} body, and an X-Request-ID; returns the detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"}
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    assert len(response.headers.get_list("x-request-id")) == 1  # once, whoever answered
    assert response.headers["x-request-id"]
    return str(detail)


@pytest.mark.parametrize(("name", "case"), list(bad_corpus().items()))
def test_bad_inputs_get_the_documented_4xx(
    client: TestClient, name: str, case: tuple[bytes, int]
) -> None:
    body, status = case
    assert_error(client.post("/segment", content=body), status)
    assert_error(client.post("/segment", files={"file": ("x", body)}), status)
    assert client.get("/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("format=jpeg", "format"),
        ("threshold=0", "threshold"),
        ("threshold=1", "threshold"),
        ("threshold=nan", "threshold"),
        ("threshold=abc", "threshold"),
        ("class=0", "class"),
        ("class=2", "class"),
        ("tta=maybe", "tta"),
    ],
)
def test_bad_parameters_are_422_with_one_string(client: TestClient, query: str, word: str) -> None:
    detail = assert_error(client.post(f"/segment?{query}", content=IMAGE_PNG), 422)
    assert word in detail


def test_multipart_without_a_file_field_is_400(client: TestClient) -> None:
    detail = assert_error(client.post("/segment", files={"image": ("x.png", IMAGE_PNG)}), 400)
    assert "'file'" in detail
    assert_error(client.post("/segment", data={"file": "not a file"}), 400)
    broken = client.post(
        "/segment",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nabc",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/segment"), 405)


def test_body_limit_counts_the_whole_body(binary_model: Path) -> None:
    with TestClient(create_app(settings(binary_model, max_upload_bytes=len(IMAGE_PNG)))) as c:
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200
        detail = assert_error(c.post("/segment", content=IMAGE_PNG + b"\0"), 413)
        assert "UNET_MAX_UPLOAD_BYTES" in detail
        # the multipart envelope makes the same image too large
        assert_error(c.post("/segment", files={"file": ("x.png", IMAGE_PNG)}), 413)

        def chunks():  # type: ignore[no-untyped-def]
            yield IMAGE_PNG
            yield b"\0"

        assert_error(c.post("/segment", content=chunks()), 413)


def test_pixel_limit_is_inclusive(binary_model: Path) -> None:
    with TestClient(create_app(settings(binary_model, max_image_pixels=60 * 90))) as c:
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200
        assert_error(c.post("/segment", content=png(noise(61, 90))), 413)


def test_api_keys(binary_model: Path) -> None:
    app = create_app(settings(binary_model, api_keys="k1,k2"))
    with TestClient(app) as c:
        for headers in [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "k3"}]:
            response = c.post("/segment", content=IMAGE_PNG, headers=headers)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
            assert_error(c.get("/model", headers=headers), 401)
        assert c.post("/segment", content=IMAGE_PNG, headers={"X-API-Key": "k2"}).status_code == 200
        assert c.get("/model", headers={"Authorization": "Bearer k1"}).status_code == 200
        for path in ["/health", "/health/live", "/health/ready", "/metrics", "/openapi.json"]:
            assert c.get(path).status_code == 200, path


def test_not_ready_before_the_model_is_loaded(binary_model: Path) -> None:
    client = TestClient(create_app(settings(binary_model)))  # no `with`: no lifespan yet
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"status": "not ready"})
    assert client.get("/health").status_code == 503
    response = client.post("/segment", content=IMAGE_PNG)
    assert_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert_error(client.get("/model"), 503)
    with client:  # the lifespan runs: loaded, warmed up, ready
        assert client.get("/health/ready").json() == {"status": "ready"}
        health = client.get("/health").json()
        assert health["status"] == "ready"
        assert health["model"] == {"name": "binary", "version": "0.0.0"}
        assert (health["provider"], health["precision"]) == default_engine(binary_model)


def test_overload_is_503_with_retry_after(binary_model: Path) -> None:
    with TestClient(create_app(settings(binary_model, max_queue=0))) as c:
        admission: Admission = c.app.state.admission  # type: ignore[attr-defined]
        admission.admitted = 1  # as if one inference were running
        try:
            response = c.post("/segment", content=IMAGE_PNG)
        finally:
            admission.admitted = 0
        detail = assert_error(response, 503)
        assert "UNET_MAX_QUEUE" in detail
        assert int(response.headers["retry-after"]) >= 1
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200


def test_refused_requests_give_their_slot_back(binary_model: Path) -> None:
    app = create_app(settings(binary_model, max_queue=0, max_upload_bytes=len(IMAGE_PNG)))
    with TestClient(app) as c:
        for body, status in [(IMAGE_PNG + b"\0", 413), (b"", 400), (b"GIF89a....", 415)] * 3:
            assert c.post("/segment", content=body).status_code == status
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200
        admission: Admission = c.app.state.admission  # type: ignore[attr-defined]
        assert admission.admitted == 0


def test_model_endpoint(client: TestClient, binary_model: Path) -> None:
    info = client.get("/model").json()
    assert info["classes"] == ["background", "foreground"]
    assert (info["padding"], info["halo"], info["size_multiple"], info["min_size"]) == (
        "valid",
        20,
        4,
        44,
    )
    assert info["normalization"] == {"scale": 1 / 255, "offset": 0.0}
    provider, precision = default_engine(binary_model)
    assert (info["providers"], info["precision"]) == ([provider], precision)
    assert info["card"] == "embedded"
    assert info["tiling"] == {
        "tile_size": CPU_TILE_SIZE,
        "batch_size": CPU_BATCH_SIZE,
        "fixed_shape": False,  # the CPU plan shrinks tiles to fit; GPU providers fix them
    }
    assert len(info["sha256"]) == 64


def test_a_bare_model_is_served_with_one_warning_and_card_inferred(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users_net.onnx"
    onnx.save(build_onnx(BINARY, random_weights(BINARY, 3), card=None), str(path))
    with caplog.at_level(logging.INFO), TestClient(create_app(settings(path))) as c:
        info = c.get("/model").json()
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200
    assert (info["card"], info["name"], info["version"]) == ("inferred", "users_net", "unknown")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no card" in warnings[0]
    assert "users_net.json beside the model" in warnings[0]


def test_tiling_settings_reach_the_predictor(binary_model: Path) -> None:
    with TestClient(create_app(settings(binary_model, tile_size=64, batch_size=3))) as c:
        tiling = c.get("/model").json()["tiling"]
        assert (tiling["tile_size"], tiling["batch_size"]) == (64, 3)
        assert c.post("/segment", content=png(noise(200, 150))).status_code == 200


def test_openapi_documents_every_parameter(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/segment"]["post"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"format", "threshold", "class", "tta"} <= names
    assert all(p.get("description") for p in operation["parameters"])
    content = operation["requestBody"]["content"]
    assert "multipart/form-data" in content
    assert "application/octet-stream" in content
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(operation["responses"])
    for path in ["/model", "/health", "/health/ready", "/health/live", "/metrics"]:
        assert path in schema["paths"]


def test_an_unexpected_failure_is_a_json_500_and_the_service_goes_on(
    binary_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings(binary_model))) as c:
        service: Service = c.app.state.service  # type: ignore[attr-defined]

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("simulated fault")

        monkeypatch.setattr(service.predictor, "predict", broken)
        response = c.post("/segment", content=IMAGE_PNG, headers={"X-Request-ID": "boom-1"})
        detail = assert_error(response, 500)
        assert "boom-1" in detail
        assert "simulated" not in detail  # internals stay in the log
        monkeypatch.undo()
        assert c.post("/segment", content=IMAGE_PNG).status_code == 200
        assert c.app.state.admission.admitted == 0  # type: ignore[attr-defined]
