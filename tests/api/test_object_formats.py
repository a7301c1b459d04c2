"""The object formats and the picture over HTTP: instances, objects, geojson, overlay, and a
class-index PNG that every common reader decodes to the indices."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import shapely
import SimpleITK
import skimage.io
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as coco_mask
from shapely.geometry import shape

from app.codecs.encode import encode_instances
from app.inference import Predictor, load_model
from app.main import create_app
from tests.conftest import settings
from tests.nets import UNetSpec, default_card, save_model
from tests.samples import noise, png, tiff

# pycocotools' decode trips numpy 2's __array__ deprecation (its own code, not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
IMAGE = png(noise(90, 70, seed=5))


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_png_gives_the_class_indices_in_every_common_reader(
    softmax_client: TestClient, tmp_path: Path
) -> None:
    answer = softmax_client.post("/segment", content=IMAGE)
    indices = read_png(answer.content)
    assert Image.open(io.BytesIO(answer.content)).mode == "L"
    assert set(np.unique(indices).tolist()) <= {0, 1, 2}
    path = tmp_path / "mask.png"
    path.write_bytes(answer.content)
    readers = {
        "opencv": cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
        "imageio": iio.imread(path),
        "scikit-image": skimage.io.imread(path),
        "simpleitk": SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(path))),
    }
    for name, read in readers.items():
        np.testing.assert_array_equal(np.asarray(read), indices, err_msg=name)


@pytest.fixture(scope="module")
def objects_client(binary_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(binary_model))) as client:
        yield client


@pytest.fixture(scope="module")
def t(objects_client: TestClient) -> str:
    """A threshold that splits this random model's answer into many ragged objects."""
    p = read_png(objects_client.post("/segment?format=probability", content=IMAGE).content)
    return f"threshold={float(np.median(p)) / 65535:.6f}"


def test_instances_objects_and_geojson_agree(objects_client: TestClient, t: str) -> None:
    instances = objects_client.post(f"/segment?format=instances&{t}", content=IMAGE)
    assert instances.headers["content-type"] == "image/png"
    ids = read_png(instances.content).astype(np.int64)
    count = int(instances.headers["x-object-count"])
    assert count == ids.max() > 0
    table = objects_client.post(f"/segment?format=objects&{t}", content=IMAGE).json()
    assert (table["height"], table["width"]) == ids.shape
    assert [o["id"] for o in table["objects"]] == list(range(1, count + 1))
    for row in table["objects"]:
        rle = {"size": row["rle"]["size"], "counts": row["rle"]["counts"].encode()}
        mine = coco_mask.decode(rle).astype(bool)
        np.testing.assert_array_equal(mine, ids == row["id"])
        assert row["area"] == mine.sum()
        x, y, w, h = row["bbox"]
        assert mine[y : y + h, x : x + w].sum() == mine.sum()
        assert mine[y].any()
        assert mine[:, x].any()
        assert row["label"] == "foreground"
        assert 0 <= row["score"] <= 1
    geo = objects_client.post(f"/segment?format=geojson&{t}", content=IMAGE)
    assert geo.headers["content-type"] == "application/geo+json"
    features = geo.json()["features"]
    assert len(features) == count
    ys, xs = np.mgrid[0 : ids.shape[0], 0 : ids.shape[1]]
    for feature in features:
        geometry = shape(feature["geometry"])
        assert geometry.is_valid
        inside = shapely.contains_xy(geometry, xs + 0.5, ys + 0.5)
        np.testing.assert_array_equal(inside, ids == feature["properties"]["id"])
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"]["name"] == "foreground"


def test_min_area_drops_small_objects(objects_client: TestClient, t: str) -> None:
    areas = [
        o["area"]
        for o in objects_client.post(f"/segment?format=objects&{t}", content=IMAGE).json()[
            "objects"
        ]
    ]
    cut = sorted(areas)[len(areas) // 2]
    kept = objects_client.post(f"/segment?format=objects&min_area={cut}&{t}", content=IMAGE).json()[
        "objects"
    ]
    assert sorted(o["area"] for o in kept) == sorted(a for a in areas if a >= cut)


def test_an_image_without_objects_is_an_empty_answer(objects_client: TestClient) -> None:
    """Everything above the threshold: no object (this was a 500 in format=objects)."""
    t = "threshold=0.999999"
    table = objects_client.post(f"/segment?format=objects&{t}", content=IMAGE)
    assert table.status_code == 200
    assert table.json()["objects"] == []
    geo = objects_client.post(f"/segment?format=geojson&{t}", content=IMAGE)
    assert geo.status_code == 200
    assert geo.json()["features"] == []
    ids = objects_client.post(f"/segment?format=instances&{t}", content=IMAGE)
    assert ids.status_code == 200
    assert not read_png(ids.content).any()


def test_multi_frame_objects_carry_their_frame(objects_client: TestClient, t: str) -> None:
    pages = tiff(noise(40, 50, seed=1), noise(40, 50, seed=2))
    rows = objects_client.post(f"/segment?format=objects&{t}", content=pages).json()["objects"]
    assert {r["frame"] for r in rows} == {0, 1}
    assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))
    features = objects_client.post(f"/segment?format=geojson&{t}", content=pages).json()["features"]
    assert {f["properties"]["frame"] for f in features} == {0, 1}
    for single in ("instances", "overlay"):
        refused = objects_client.post(f"/segment?format={single}", content=pages)
        assert refused.status_code == 422
        assert "format=rle, objects or geojson" in refused.json()["detail"]


def test_overlay_is_the_input_with_classes_or_outlines(objects_client: TestClient, t: str) -> None:
    gray = noise(90, 70, seed=5)
    filled = np.asarray(
        Image.open(
            io.BytesIO(objects_client.post(f"/segment?format=overlay&{t}", content=IMAGE).content)
        )
    )
    assert filled.shape == (90, 70, 3)
    mask = read_png(objects_client.post(f"/segment?{t}", content=IMAGE).content)
    np.testing.assert_array_equal(filled[mask == 0], np.repeat(gray[mask == 0][:, None], 3, axis=1))
    assert (filled[mask == 1] != np.repeat(gray[mask == 1][:, None], 3, axis=1)).any()
    outlined = objects_client.post(f"/segment?format=overlay&objects=true&{t}", content=IMAGE)
    outlined = outlined.content
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(outlined))), filled)


def test_more_than_65535_objects_are_a_32_bit_tiff() -> None:
    labels = np.arange(1, 70_001, dtype=np.int64).reshape(280, 250)
    data, media_type = encode_instances(labels)
    assert media_type == "image/tiff"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), labels)


def test_the_card_gives_the_default_threshold_and_the_objects_recipe(tmp_path: Path) -> None:
    spec = UNetSpec(depth=2, base=2)
    path = tmp_path / "calibrated.onnx"
    save_model(path, spec, seed=3, card=default_card(spec, name="plain"))
    model = load_model(path, "cpu", threads=1)
    p = Predictor(model.engine.run, model.card).predict(noise(90, 70, seed=5)).probabilities
    median = round(float(np.median(p)), 6)  # a threshold that splits this model's answer
    recipe = {"method": "components", "min_area": 3}
    card = default_card(spec, name="calibrated", threshold=median, objects=recipe)
    save_model(path, spec, seed=3, card=card)  # the same weights, a calibrated card
    with TestClient(create_app(settings(path))) as client:
        default = client.post("/segment", content=IMAGE).content
        assert default == client.post(f"/segment?threshold={median}", content=IMAGE).content
        assert default != client.post("/segment?threshold=0.5", content=IMAGE).content
        rows = client.post("/segment?format=objects", content=IMAGE).json()["objects"]
        assert min(r["area"] for r in rows) >= 3
        info = client.get("/model").json()
        assert info["threshold"] == median
        assert info["objects"]["min_area"] == 3
