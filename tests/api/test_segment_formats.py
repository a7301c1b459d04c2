"""POST /segment in-process: every format and parameter gives what a direct Predictor gives."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask

from app.inference import Prediction, Predictor, load_model
from tests.samples import encode, jpeg, noise, png, tiff

# pycocotools 2.0.11's decode (only the tests decode) trips numpy 2's __array__ copy
# deprecation inside its Cython code; the encoder the service uses does not.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
IMAGE = noise(60, 90, seed=5)


@cache
def predictor(model: Path) -> Predictor:
    loaded = load_model(model, threads=1)  # the service's engine
    return Predictor(loaded.engine.run, loaded.card)


def expected(
    model: Path, frame: np.ndarray, threshold: float = 0.5, tta: bool = False
) -> Prediction:
    return predictor(model).predict(frame, threshold=threshold, tta=tta)


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def rle_masks(document: dict, classes: int) -> np.ndarray:
    """The class-index map rebuilt from the RLE segments (classes 1..K-1, frame 0)."""
    labels = np.zeros((document["height"], document["width"]), dtype=np.uint8)
    for segment in document["segments"]:
        rle = {"size": segment["rle"]["size"], "counts": segment["rle"]["counts"].encode()}
        labels[coco_mask.decode(rle).astype(bool)] = segment["class_index"]
    assert len(document["segments"]) == classes - 1
    return labels


def test_png_is_the_class_index_mask(client: TestClient, binary_model: Path) -> None:
    response = client.post("/segment", content=png(IMAGE))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    mask = read_png(response.content)
    assert mask.shape == IMAGE.shape
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected(binary_model, IMAGE).mask)


def test_multipart_and_raw_body_give_the_same_answer(client: TestClient) -> None:
    raw = client.post("/segment", content=png(IMAGE), headers={"content-type": "image/png"})
    form = client.post("/segment", files={"file": ("x.png", png(IMAGE), "image/png")})
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content


def test_content_type_is_not_trusted(client: TestClient) -> None:
    lying = client.post("/segment", content=png(IMAGE), headers={"content-type": "image/jpeg"})
    assert lying.status_code == 200
    assert lying.content == client.post("/segment", content=png(IMAGE)).content


def test_rle_decodes_to_the_png_mask(client: TestClient) -> None:
    mask = read_png(client.post("/segment?format=png", content=png(IMAGE)).content)
    response = client.post("/segment?format=rle", content=png(IMAGE))
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert (document["height"], document["width"]) == IMAGE.shape
    assert set(document["model"]) == {"name", "version", "sha256"}
    assert len(document["model"]["sha256"]) == 64
    np.testing.assert_array_equal(rle_masks(document, 2), mask)
    segment = document["segments"][0]
    assert segment["label"] == "foreground"
    assert segment["area"] == int(mask.sum())
    assert "frame" not in segment


def test_rle_of_an_empty_class_has_area_and_bbox_zero(client: TestClient) -> None:
    document = client.post("/segment?format=rle&threshold=0.999999", content=png(IMAGE)).json()
    if document["segments"][0]["area"] == 0:
        assert document["segments"][0]["bbox"] == [0, 0, 0, 0]
    document = client.post("/segment?format=rle&threshold=0.000001", content=png(IMAGE)).json()
    assert document["segments"][0]["area"] == IMAGE.size
    assert document["segments"][0]["bbox"] == [0, 0, 90, 60]


def test_probability_is_16_bit_round_p_times_65535(client: TestClient, binary_model: Path) -> None:
    response = client.post("/segment?format=probability", content=png(IMAGE))
    probability = read_png(response.content)
    assert probability.dtype == np.uint16
    assert probability.shape == IMAGE.shape
    p = expected(binary_model, IMAGE).probabilities[0].astype(np.float64)
    np.testing.assert_array_equal(probability, np.rint(p * 65535).astype(np.uint16))


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_threshold_is_applied(client: TestClient, binary_model: Path, threshold: float) -> None:
    response = client.post(f"/segment?threshold={threshold}", content=png(IMAGE))
    want = expected(binary_model, IMAGE, threshold=threshold).mask
    np.testing.assert_array_equal(read_png(response.content), want)


def test_tta_averages_the_flips(client: TestClient, binary_model: Path) -> None:
    response = client.post("/segment?format=probability&tta=true", content=png(IMAGE))
    p = expected(binary_model, IMAGE, tta=True).probabilities[0].astype(np.float64)
    np.testing.assert_array_equal(read_png(response.content), np.rint(p * 65535))


def test_softmax_model_argmax_and_class_parameter(
    softmax_client: TestClient, softmax_model: Path
) -> None:
    want = expected(softmax_model, IMAGE)
    mask = read_png(softmax_client.post("/segment", content=png(IMAGE)).content)
    np.testing.assert_array_equal(mask, want.mask)
    document = softmax_client.post("/segment?format=rle", content=png(IMAGE)).json()
    np.testing.assert_array_equal(rle_masks(document, 3), mask)
    assert [s["label"] for s in document["segments"]] == ["class_1", "class_2"]
    response = softmax_client.post("/segment?format=probability&class=2", content=png(IMAGE))
    p = want.probabilities[2].astype(np.float64)
    np.testing.assert_array_equal(read_png(response.content), np.rint(p * 65535))
    bad = softmax_client.post("/segment?format=probability&class=3", content=png(IMAGE))
    assert bad.status_code == 422
    assert "1..2" in bad.json()["detail"]


def test_rgb_input_to_a_gray_model_is_luma(client: TestClient, binary_model: Path) -> None:
    rgba = noise(60, 90, 4, seed=8)
    response = client.post("/segment?format=probability", content=png(rgba))
    p = expected(binary_model, rgba).probabilities[0].astype(np.float64)
    np.testing.assert_array_equal(read_png(response.content), np.rint(p * 65535))


def test_gray_input_to_an_rgb_model_is_replicated(rgb_client: TestClient, rgb_model: Path) -> None:
    response = rgb_client.post("/segment?format=probability", content=png(IMAGE))
    replicated = np.repeat(IMAGE[:, :, None], 3, axis=2)
    p = expected(rgb_model, replicated).probabilities[0].astype(np.float64)
    np.testing.assert_array_equal(read_png(response.content), np.rint(p * 65535))


@pytest.mark.parametrize(
    "body",
    [
        jpeg(IMAGE),
        tiff(IMAGE),
        encode(noise(60, 90, dtype=np.uint16), "PNG"),
        tiff(noise(60, 90, 3)),
    ],
    ids=["jpeg", "tiff", "png16", "tiff-rgb"],
)
def test_every_input_format_is_segmented(client: TestClient, body: bytes) -> None:
    response = client.post("/segment", content=body)
    assert response.status_code == 200
    assert read_png(response.content).shape == (60, 90)


def test_sixteen_bit_input_is_scaled_to_the_0_255_scale(
    client: TestClient, binary_model: Path
) -> None:
    wide = noise(60, 90, dtype=np.uint16, seed=4)
    response = client.post("/segment?format=probability", content=encode(wide, "PNG"))
    p = expected(binary_model, wide).probabilities[0].astype(np.float64)
    np.testing.assert_array_equal(read_png(response.content), np.rint(p * 65535))


def test_multi_frame_rle_lists_segments_per_frame(client: TestClient, binary_model: Path) -> None:
    pages = [noise(50, 60, seed=s) for s in range(3)]
    document = client.post("/segment?format=rle", content=tiff(*pages)).json()
    assert [s["frame"] for s in document["segments"]] == [0, 1, 2]
    for segment, page in zip(document["segments"], pages, strict=True):
        rle = {"size": segment["rle"]["size"], "counts": segment["rle"]["counts"].encode()}
        np.testing.assert_array_equal(coco_mask.decode(rle), expected(binary_model, page).mask)


@pytest.mark.parametrize("output", ["png", "probability"])
def test_multi_frame_with_a_single_frame_format_is_422(client: TestClient, output: str) -> None:
    response = client.post(f"/segment?format={output}", content=tiff(IMAGE, IMAGE))
    assert response.status_code == 422
    assert "format=rle" in response.json()["detail"]


def test_dicom_seg_for_a_non_dicom_input_is_415(client: TestClient) -> None:
    response = client.post("/segment?format=dicom-seg", content=png(IMAGE))
    assert response.status_code == 415
    assert "DICOM" in response.json()["detail"]


def test_images_smaller_than_the_network_input_are_segmented(client: TestClient) -> None:
    for shape in [(1, 1), (3, 200), (44, 45)]:
        response = client.post("/segment?format=rle", content=png(noise(*shape)))
        assert response.status_code == 200, response.text
        assert (response.json()["height"], response.json()["width"]) == shape


def test_headers_request_id_and_server_timing(client: TestClient) -> None:
    response = client.post("/segment", content=png(IMAGE), headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    stages = [part.strip().split(";")[0] for part in response.headers["server-timing"].split(",")]
    assert stages == ["decode", "inference", "encode"]
    assert all(";dur=" in part for part in response.headers["server-timing"].split(","))
    generated = client.post("/segment", content=png(IMAGE)).headers["x-request-id"]
    assert len(generated) >= 16
    unsafe = client.post("/segment", content=b"", headers={"X-Request-ID": "a b\tc" * 50})
    assert unsafe.status_code == 400
    assert unsafe.headers["x-request-id"] != "a b\tc" * 50
