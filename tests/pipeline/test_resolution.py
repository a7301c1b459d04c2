"""A model card's pixel size against a slide's: the same size (within 10 %) runs as it is;
another is segmented at the model's pixel size -- from the pyramid level nearest at or
above it, else resampled (the area mean) -- and brought back to level 0 (nearest for
classes and ids, linear for the probability, polygons scaled); --pixel-size / pixel_size
stand for what the file says; an unstated size is one WARNING."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from fastapi.testclient import TestClient

from app import cli
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance
from app.inference import Predictor, load_model
from app.main import create_app
from app.pipeline.large import segment_large
from tests.conftest import settings
from tests.jobs.helpers import wait, zipped_labels
from tests.nets import RGB, default_card, save_model
from tests.samples import gradient_rgb, write_ome_tiff

IMAGE = gradient_rgb(600, 800)
IMAGE[100:400, 150:500] = [210, 120, 170]  # something for the model to find
BASE = ["--tile", "256", "--max-pixels", "1000", "--threshold", "0.5"]


@pytest.fixture(scope="module")
def half_micron(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB model trained at 0.5 µm/px (its card says so)."""
    path = tmp_path_factory.mktemp("resolution") / "half.onnx"
    return save_model(path, RGB, card=default_card(RGB, name="half", pixel_size_um=0.5))


def scan(folder: Path, name: str, size: float | None, pyramid: bool = True) -> Path:
    """IMAGE at ``size`` µm/px: a pyramidal OME-TIFF (level 1 = every other pixel), or a
    plain tiled TIFF in pixels per centimetre."""
    if pyramid:
        path = folder / f"{name}.ome.tif"
        metadata = {"PhysicalSizeX": size, "PhysicalSizeY": size} if size else {}
        write_ome_tiff(path, IMAGE, metadata=metadata)
    else:
        path = folder / f"{name}.tif"
        per_cm = 1e4 / size if size else 1
        tifffile.imwrite(path, IMAGE, tile=(256, 256), resolution=(per_cm, per_cm),
                         resolutionunit="CENTIMETER")  # fmt: skip
    return path


def run(model: Path, out: Path, *argv: str) -> list[dict[str, object]]:
    assert cli.main([*argv, "--model", str(model), "--out", str(out), *BASE]) in (0, 1)
    return list(json.loads((out / "summary.json").read_text()))


def labels(out: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(out / f"{name}.ome.zarr" / "0"), mode="r"))


def at_half(model: Path, image: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The model's classes of ``image`` (already at 0.5 µm/px), in memory."""
    loaded = load_model(model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=256)
    out = tmp_path / "reference.ome.zarr"
    segment_large(image, out, LARGE_OUTPUTS["ome-zarr"], predictor, Provenance.of(loaded),
                  Options(threshold=0.5))  # fmt: skip
    return np.asarray(zarr.open_array(str(out / "0"), mode="r"))


def test_a_finer_slide_is_segmented_from_its_level_at_the_models_size(
    half_micron: Path, tmp_path: Path
) -> None:
    """0.25 µm/px with a 0.5 µm/px model: level 1 (0.5 µm/px) is segmented, and its classes
    come back to level 0's size, each pixel its 2 x 2."""
    fine = scan(tmp_path, "fine", 0.25)
    (row,) = run(half_micron, tmp_path / "out", str(fine))
    assert (row["status"], row["width"], row["height"]) == ("ok", 800, 600)
    assert (row["pixel_size_um"], row["segmented_at"]) == ([0.25, 0.25], [300, 400])
    expected = at_half(half_micron, IMAGE[::2, ::2], tmp_path)
    assert 0 < expected.mean() < 1
    assert np.array_equal(labels(tmp_path / "out", "fine"), expected.repeat(2, 0).repeat(2, 1))


def test_without_a_pyramid_the_slide_is_resampled_by_its_area_mean(
    half_micron: Path, tmp_path: Path
) -> None:
    flat = scan(tmp_path, "flat", 0.25, pyramid=False)
    (row,) = run(half_micron, tmp_path / "out", str(flat))
    assert row["segmented_at"] == [300, 400]
    mean = np.rint(IMAGE.reshape(300, 2, 400, 2, 3).astype(np.float64).mean(axis=(1, 3)))
    expected = at_half(half_micron, mean.astype(np.uint8), tmp_path)
    assert np.array_equal(labels(tmp_path / "out", "flat"), expected.repeat(2, 0).repeat(2, 1))


def test_the_same_size_within_ten_percent_runs_as_it_is_and_pixel_size_overrides(
    half_micron: Path, tmp_path: Path
) -> None:
    near = scan(tmp_path, "near", 0.52)
    (row,) = run(half_micron, tmp_path / "a", str(near))
    assert (row["pixel_size_um"], "segmented_at" in row) == ([0.52, 0.52], False)
    assert np.array_equal(labels(tmp_path / "a", "near"), at_half(half_micron, IMAGE, tmp_path))
    fine = scan(tmp_path, "fine", 0.25)
    (row,) = run(half_micron, tmp_path / "b", str(fine), "--pixel-size", "0.5")
    assert (row["pixel_size_um"], "segmented_at" in row) == ([0.5, 0.5], False)


def test_objects_and_polygons_come_back_in_level_0_coordinates(
    half_micron: Path, tmp_path: Path
) -> None:
    fine = scan(tmp_path, "fine", 0.25)
    out = tmp_path / "out"
    run(half_micron, out, str(fine), "--format", "geojson")
    run(half_micron, out, str(fine), "--format", "instances")
    ids = np.asarray(zarr.open_array(str(out / "fine.instances.ome.zarr" / "0"), mode="r"))
    assert ids.shape == (600, 800)
    assert np.array_equal(ids[::2, ::2].repeat(2, 0).repeat(2, 1), ids)  # 2 x 2 each
    features = json.loads((out / "fine.geojson").read_text())["features"]
    assert len(features) == len(np.unique(ids)) - 1
    for item in features:
        rings = item["geometry"]["coordinates"]
        rings = rings if item["geometry"]["type"] == "Polygon" else [r for p in rings for r in p]
        points = np.concatenate([np.asarray(r) for r in rings])
        assert points.min() >= 0
        assert points[:, 0].max() <= 800
        assert points[:, 1].max() <= 600
        measured = item["properties"]["measurements"]
        assert measured["area"] % 4 == 0  # 2 x 2 level-0 px each
        assert measured["area_um2"] == pytest.approx(measured["area"] * 0.25**2, abs=1e-3)


def test_an_unstated_size_runs_with_one_warning(
    half_micron: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = scan(tmp_path, "bare", None)
    with caplog.at_level(logging.WARNING, logger="app.pipeline"):
        (row,) = run(half_micron, tmp_path / "out", str(bare))
    assert (row["status"], "pixel_size_um" in row) == ("ok", False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "bare.ome.tif states no pixel size and the model half works at 0.5 µm/px: segmented "
        "as if it were; give --pixel-size (jobs: pixel_size) to have it checked"
    ]


def test_a_model_without_a_size_changes_nothing(rgb_model: Path, tmp_path: Path) -> None:
    (row,) = run(rgb_model, tmp_path / "out", str(scan(tmp_path, "fine", 0.25)))
    assert (row["pixel_size_um"], "segmented_at" in row) == ([0.25, 0.25], False)


def test_a_job_at_another_size_comes_back_at_level_0(half_micron: Path, tmp_path: Path) -> None:
    body = scan(tmp_path, "fine", 0.25).read_bytes()
    config = settings(half_micron, jobs_dir=tmp_path / "jobs", max_image_pixels=1000,
                      tile_size=256)  # fmt: skip
    with TestClient(create_app(config)) as client:
        assert client.post("/jobs?pixel_size=0", content=body).status_code == 422
        answer = client.post("/jobs?threshold=0.5", content=body)
        assert answer.status_code == 202, answer.text
        job, _ = wait(client, answer.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"]["tiles_done"] == job["progress"]["tiles_total"]
        result = zipped_labels(client.get(job["result"]).content, tmp_path)
        assert client.get("/model").json()["pixel_size_um"] == 0.5
    expected = at_half(half_micron, IMAGE[::2, ::2], tmp_path)
    assert np.array_equal(result, expected.repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("pyramid", [True, False], ids=["level-1", "resampled"])
def test_on_dask_the_blocks_read_the_same_resampled_level(
    pyramid: bool, half_micron: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fine = scan(tmp_path, "fine", 0.25, pyramid)
    name = fine.name.split(".")[0]
    run(half_micron, tmp_path / "here", str(fine))
    address = request.getfixturevalue("cluster")
    (row,) = run(half_micron, tmp_path / "dask", str(fine), "--dask", address)
    assert row["segmented_at"] == [300, 400]
    assert np.array_equal(labels(tmp_path / "dask", name), labels(tmp_path / "here", name))


def test_an_unbelievable_size_is_ignored_from_a_file_and_refused_from_a_user(
    half_micron: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """72 dpi written as pixels per centimetre is 352.8 µm/px: a print size, not believed."""
    printed = tmp_path / "printed.tif"
    tifffile.imwrite(printed, IMAGE, tile=(256, 256), resolution=(28.3465, 28.3465),
                     resolutionunit="CENTIMETER")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="app.pipeline"):
        (row,) = run(half_micron, tmp_path / "a", str(printed))
    assert (row["status"], "segmented_at" in row, row["width"]) == ("ok", False, 800)
    assert any("not believed" in r.getMessage() for r in caplog.records)
    (row,) = run(half_micron, tmp_path / "b", str(printed), "--pixel-size", "100")
    assert row["status"] == "failed"
    assert "more than 16x from the model's 0.5 µm/px" in str(row["error"])


def test_skipping_the_background_of_a_resampled_slide(half_micron: Path, tmp_path: Path) -> None:
    fine = scan(tmp_path, "fine", 0.25)
    (row,) = run(half_micron, tmp_path / "out", str(fine), "--skip-background")
    assert (row["status"], row["segmented_at"], row["width"]) == ("ok", [300, 400], 800)
    assert row["background_skipped"] is not None
    tissue = zarr.open_group(str(tmp_path / "out" / "fine.ome.zarr" / "tissue"), mode="r")
    transform = tissue.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    picture = np.asarray(tissue["0"]).shape
    assert transform[0]["scale"] == pytest.approx([600 / picture[0], 800 / picture[1]])


def test_geojson_of_an_image_not_resampled_keeps_integer_coordinates(
    half_micron: Path, tmp_path: Path
) -> None:
    near = scan(tmp_path, "near", 0.5)
    run(half_micron, tmp_path / "out", str(near), "--format", "geojson")
    features = json.loads((tmp_path / "out" / "near.geojson").read_text())["features"]
    assert features
    for item in features:  # 0.5 µm/px: a pixel is 0.25 µm²
        measured = item["properties"]["measurements"]
        assert measured["area_um2"] == pytest.approx(measured["area"] * 0.25, abs=1e-3)
    text = json.dumps(features[0]["geometry"]["coordinates"])
    assert "." not in text


def test_a_small_slide_at_another_size_goes_the_way_that_resamples(
    half_micron: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Below --max-pixels too: by default the resampled OME-Zarr (equal to the large run's),
    not a PNG at the wrong pixel size; an in-memory format asked for is made as it is,
    with a WARNING that says so."""
    fine = scan(tmp_path, "fine", 0.25)
    argv = [str(fine), "--model", str(half_micron), "--tile", "256", "--threshold", "0.5"]
    assert cli.main([*argv, "--out", str(tmp_path / "small")]) == 0
    (row,) = json.loads((tmp_path / "small" / "summary.json").read_text())
    assert (row["format"], row["segmented_at"]) == ("ome-zarr", [300, 400])
    run(half_micron, tmp_path / "large", str(fine))
    assert np.array_equal(labels(tmp_path / "small", "fine"), labels(tmp_path / "large", "fine"))
    with caplog.at_level(logging.WARNING):
        assert cli.main([*argv, "--out", str(tmp_path / "png"), "--format", "png"]) == 0
    assert "does not resample" in caplog.text
    assert (tmp_path / "png" / "fine.png").exists()
    near = scan(tmp_path, "near", 0.5)  # at the model's size: the in-memory PNG, as ever
    assert cli.main([str(near), *argv[1:], "--out", str(tmp_path / "near")]) == 0
    (row,) = json.loads((tmp_path / "near" / "summary.json").read_text())
    assert row["format"] == "png"
