"""The Open Inference Protocol (/v2) through Triton's own HTTP client, JSON and binary
tensor data: metadata, health, and inference equal to POST /segment's."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import API_KEY, Server
from tests.samples import noise, png

http_client = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
utils = pytest.importorskip("tritonclient.utils")

AUTH = {"Authorization": f"Bearer {API_KEY}"}
IMAGE = noise(90, 70, seed=8)
BINARY_8X8 = (
    b'{"inputs": [{"name": "image", "shape": [8, 8], "datatype": "UINT8",'
    b' "parameters": {"binary_data_size": 64}}]}'
)


@pytest.fixture
def triton(server: Server) -> Iterator[Any]:
    client = http_client.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def segment(server: Server, image: np.ndarray, query: str = "") -> httpx.Response:
    response = httpx.post(
        f"{server.url}/segment?{query}", content=png(image), headers=AUTH, timeout=60
    )
    assert response.status_code == 200, response.text
    return response


def mask_of(server: Server, image: np.ndarray, query: str = "") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(segment(server, image, query).content)))


def infer(triton: Any, image: np.ndarray, binary: bool, **parameters: Any) -> Any:
    tensor = http_client.InferInput(
        "image", list(image.shape), utils.np_to_triton_dtype(image.dtype)
    )
    tensor.set_data_from_numpy(image, binary_data=binary)
    outputs = [
        http_client.InferRequestedOutput(name, binary_data=binary)
        for name in ("mask", "probability")
    ]
    # a copy: the client writes Inference-Header-Content-Length (an int) into the dict
    return triton.infer(
        "binary", [tensor], outputs=outputs, headers=dict(AUTH), parameters=parameters or None
    )


def test_server_and_model_metadata_and_health(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    assert triton.is_model_ready("binary", headers=AUTH)
    metadata = triton.get_model_metadata("binary", headers=AUTH)
    assert metadata["name"] == "binary"
    assert metadata["versions"] == ["0.0.0"]
    assert [o["name"] for o in metadata["outputs"]] == ["mask", "probability"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_segment(server: Server, triton: Any, binary: bool) -> None:
    result = infer(triton, IMAGE, binary)
    mask = result.as_numpy("mask")
    assert mask.dtype == np.uint8
    assert mask.shape == (1, *IMAGE.shape)
    np.testing.assert_array_equal(mask[0], mask_of(server, IMAGE) > 0)
    probability = result.as_numpy("probability")
    assert probability.dtype == np.float32
    assert probability.shape == (1, 1, *IMAGE.shape)
    # /segment's probability PNG is round(p * 65535), in float64: the same map, rounded
    png16 = np.asarray(Image.open(io.BytesIO(segment(server, IMAGE, "format=probability").content)))
    rounded = np.rint(probability[0, 0].astype(np.float64) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(rounded, png16)


def test_threshold_tta_frames_and_uint16_as_segment(server: Server, triton: Any) -> None:
    frames = np.stack([IMAGE, IMAGE[::-1].copy()]).astype(np.uint16) * 257
    result = infer(triton, frames, True, threshold=0.3, tta=True)
    mask = result.as_numpy("mask")
    assert mask.shape == (2, *IMAGE.shape)
    for index, frame in enumerate(frames):
        expected = mask_of(server, frame, "threshold=0.3&tta=true")
        np.testing.assert_array_equal(mask[index], expected > 0)


def test_an_rgba_tensor_is_an_image_with_alpha_as_segment_takes_it(
    server: Server, triton: Any
) -> None:
    """[H, W, 4] is one RGBA image (its alpha dropped, as /segment drops a PNG's), not H
    frames four pixels wide; [H, W, 2] gray with alpha."""
    for channels in (4, 2):
        image = noise(90, 70, channels, seed=9)
        mask = infer(triton, image, True).as_numpy("mask")
        assert mask.shape == (1, 90, 70)
        np.testing.assert_array_equal(mask[0], mask_of(server, image) > 0)


def post_infer(
    server: Server, body: bytes, headers: dict[str, Any] | None = None
) -> httpx.Response:
    url = f"{server.url}/v2/models/binary/infer"
    return httpx.post(url, content=body, headers={**AUTH, **(headers or {})}, timeout=60)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b'{"inputs": []}', {}, 400, "'inputs': List should have at least 1 item"),
        (b'{"inputs": [{"name": "image", "shape": [4, 4], "datatype": "FP32", "data": []}]}',
         {}, 400, "'inputs.0.datatype': Input should be 'UINT8' or 'UINT16'"),
        (b'{"inputs": [{"name": "image", "shape": [4, 4], "datatype": "UINT8", "data": [1]}]}',
         {}, 400, "16"),
        (b'{"inputs": [{"name": "image", "shape": [4, 4], "datatype": "UINT8", "data": [[999]]}]}',
         {}, 400, "values"),
        (b'{"inputs": [{"name": "image", "shape": [4000, 4000], "datatype": "UINT8",'
         b' "parameters": {"binary_data_size": 16000000}}]}', {}, 413, "UNET_MAX_IMAGE_PIXELS"),
        (BINARY_8X8, {"Inference-Header-Content-Length": "60"}, 400, "JSON"),
        (BINARY_8X8 + bytes(10), {"Inference-Header-Content-Length": str(len(BINARY_8X8))},
         400, "binary_data_size"),
        (BINARY_8X8 + bytes(64), {"Inference-Header-Content-Length": str(len(BINARY_8X8) + 65)},
         400, "does not fit"),
        (b'{"inputs": [{"name": "image", "shape": [8, 8], "datatype": "UINT8", "data": []}],'
         b' "outputs": [{"name": "logits"}]}', {}, 400, "'outputs.0.name'"),
        (b'{"inputs": [{"name": "image", "shape": [8, 8], "datatype": "UINT8", "data": []}],'
         b' "parameters": {"threshold": 2}}', {}, 400, "'parameters.threshold'"),
        (b"{}", {"Inference-Header-Content-Length": "x"}, 422, "byte count"),
        (b"{}", {"Inference-Header-Content-Length": "\u00b2".encode("latin-1")}, 422, "byte count"),
        (b'{"inputs": [{"name": "image", "shape": [8, 8], "datatype": "UINT8", "data": []}],'
         b' "parameters": [null, null]}', {}, 400, "'parameters'"),
        (b'{"inputs": [{"name": "image", "shape": [2, 2], "datatype": ["UINT8"], "data": []}]}',
         {}, 400, "'inputs.0.datatype'"),
        (b'{"inputs": [{"shape": [2, 2], "datatype": "UINT8", "data": [1, 2, 3, 4]}]}',
         {}, 400, "'inputs.0.name': Field required"),
        (b'{"id": 7, "inputs": [{"name": "i", "shape": [1, 1], "datatype": "UINT8", "data": [1]}]}',
         {}, 400, "'id': Input should be a valid string"),
        (b'{"inputs": [{"name": "image", "shape": [1, 1], "datatype": "UINT8",'
         b' "data": [99999999999999999999999]}]}', {}, 400, "integers"),
        # 1.7 is not a pixel value of a UINT8 tensor, nor true: never cut to 1
        (b'{"inputs": [{"name": "image", "shape": [1, 2], "datatype": "UINT8",'
         b' "data": [1.7, 2]}]}', {}, 400, "integers"),
        (b'{"inputs": [{"name": "image", "shape": [1, 2], "datatype": "UINT8",'
         b' "data": [true, false]}]}', {}, 400, "integers"),
        (b'{"inputs": [{"name": "image", "shape": [1, 8, 8, 5], "datatype": "UINT8",'
         b' "parameters": {"binary_data_size": 320}}]}', {}, 400, "1 to 4 channels"),
    ],
)  # fmt: skip
def test_bad_requests_are_the_protocols_errors(
    server: Server, body: bytes, headers: dict[str, Any], status: int, words: str
) -> None:
    response = post_infer(server, body, headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"]


def test_unknown_models_and_missing_keys(server: Server) -> None:
    response = httpx.get(f"{server.url}/v2/models/liver", headers=AUTH, timeout=10)
    assert response.status_code == 404
    assert "'binary'" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/liver/infer", content=b"{}", headers=AUTH)
    assert response.status_code == 404
    response = httpx.post(f"{server.url}/v2/models/binary/infer", content=b"{}", timeout=10)
    assert response.status_code == 401
    assert "error" in response.json()
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
