"""Skipping the background of a slide: the tissue found on a small picture (Otsu of the
saturation, of the intensity for gray), only the blocks near it predicted -- exactly as
without skipping -- the rest class 0 without objects, the mask kept as the ``tissue`` label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from fastapi.testclient import TestClient
from ome_zarr_models.v04.image_label import ImageLabel

from app import cli
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance
from app.codecs.overview import overview
from app.codecs.slides import open_slide
from app.inference import Predictor, load_model
from app.inference.blocks import block_grid
from app.main import create_app
from app.pipeline.large import SKIP_BLOCK_SIZE, segment_large
from app.pipeline.tissue import context_px, find_tissue, tissue_mask
from tests.conftest import settings
from tests.jobs.helpers import wait, zipped_labels
from tests.samples import write_ome_tiff

GLASS = (236, 233, 238)


def slide(height: int = 1200, width: int = 1600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB brightfield-like slide (near-white noisy glass, a pink and purple ellipse of
    tissue in its upper left) and the ellipse."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(GLASS, 3, (height, width, 3)), 0, 255)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - 330) / 260) ** 2 + ((xx - 420) / 330) ** 2 <= 1
    stain = np.where((xx // 9 + yy // 7)[..., None] % 3 == 0, (120, 60, 150), (225, 140, 185))
    image[inside] = np.clip(stain[inside] + rng.normal(0, 8, (int(inside.sum()), 3)), 0, 255)
    return image.astype(np.uint8), inside


def test_the_tissue_of_an_rgb_slide_is_its_stained_part() -> None:
    image, inside = slide()
    mask = tissue_mask(image[::4, ::4])
    truth = inside[::4, ::4]
    assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def test_gray_tissue_is_the_darker_side_and_blank_glass_has_none() -> None:
    rng = np.random.default_rng(1)
    gray = np.clip(rng.normal(230, 4, (300, 400)), 0, 255).astype(np.uint8)
    gray[50:150, 100:300] = np.clip(rng.normal(90, 20, (100, 200)), 0, 255).astype(np.uint8)
    mask = tissue_mask(gray[:, :, None])
    assert mask[50:150, 100:300].mean() > 0.99
    assert mask.sum() < 100 * 200 * 1.02
    assert not tissue_mask(np.full((50, 60, 3), 240, np.uint8)).any()


def test_the_overview_is_a_level_of_the_pyramid_else_a_strided_read(tmp_path: Path) -> None:
    image, _ = slide(600, 800)
    picture, scale = overview(image, side=200)  # an array: every 4th pixel, read in parts
    assert scale == (4.0, 4.0)
    assert np.array_equal(picture, image[::4, ::4])
    path = tmp_path / "scan.ome.tif"
    write_ome_tiff(path, image)
    with open_slide(path) as lazy:
        picture, scale = overview(lazy, side=300)  # the file's own level 1 (400 px wide)
        assert scale == (2.0, 2.0)
        assert np.array_equal(picture, image[::2, ::2])


def test_skipping_is_exact_where_it_runs_and_background_elsewhere(
    rgb_model: Path, tmp_path: Path
) -> None:
    image, _ = slide()
    loaded = load_model(rgb_model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=256)
    options, model = Options(threshold=0.5), Provenance.of(loaded)
    out = {skip: tmp_path / f"{skip}.ome.zarr" for skip in (False, True)}
    stages: list[tuple[str, int, int]] = []
    results = {}
    for skip in (False, True):
        results[skip] = segment_large(
            image, out[skip], LARGE_OUTPUTS["ome-zarr"], predictor, model, options,
            block_size=256, skip_background=skip,
            progress=lambda stage, done, total: stages.append((stage, done, total)),
        )  # fmt: skip
    grid = block_grid(predictor.plan(*image.shape[:2]), 256)
    runs = find_tissue(image).runs(grid, context_px(predictor))
    assert 0 < sum(runs) < len(runs) / 2
    whole = np.asarray(zarr.open_array(str(out[False] / "0"), mode="r"))
    skipped = np.asarray(zarr.open_array(str(out[True] / "0"), mode="r"))
    for block, run in zip(grid, runs, strict=True):
        here = (block.rows, block.cols)
        assert np.array_equal(skipped[here], whole[here] if run else np.zeros_like(whole[here]))
    kept = sum(b.pixels for b, run in zip(grid, runs, strict=True) if run)
    assert results[True].skipped == round(1 - kept / image[..., 0].size, 4)
    assert results[False].skipped is None
    assert results[True].tiles < results[False].tiles
    background = [s for s in stages if s[0] == "background"]
    assert background == [("background", results[True].tiles, results[False].tiles)]
    label = ImageLabel.from_zarr(zarr.open_group(str(out[True] / "tissue"), mode="r"))
    scale = label.attributes.multiscales[0].datasets[0].coordinateTransformations[0]
    assert scale.model_dump()["scale"] == [1.0, 1.0]  # 1600 px: the picture is level 0 itself
    assert "tissue" not in zarr.open_group(str(out[False]), mode="r")


def test_objects_of_a_skipped_slide_lie_in_the_blocks_that_ran(
    rgb_model: Path, tmp_path: Path
) -> None:
    """Skipped glass holds no object (a watershed recipe would make one of it otherwise)."""
    image, _ = slide(700, 900)
    loaded = load_model(rgb_model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=256)
    path = tmp_path / "cells.instances.ome.zarr"
    result = segment_large(
        image, path, LARGE_OUTPUTS["instances"], predictor, Provenance.of(loaded),
        Options(threshold=0.5), block_size=256, skip_background=True,
    )  # fmt: skip
    ids = np.asarray(zarr.open_array(str(path / "0"), mode="r"))
    grid = block_grid(predictor.plan(700, 900), 256)
    runs = find_tissue(image).runs(grid, context_px(predictor))
    assert result.objects
    for block, run in zip(grid, runs, strict=True):
        if not run:
            assert not ids[block.rows, block.cols].any()


@pytest.mark.parametrize("dask", [False, True], ids=["in-process", "dask"])
def test_the_command_line_skips_the_background_alike_with_dask(
    dask: bool, rgb_model: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    image, _ = slide(2200, 2600)  # blocks of about 1024 px: the tissue in the first few
    source = tmp_path / "scan.ome.tif"
    write_ome_tiff(source, image)
    argv = [str(source), "--model", str(rgb_model), "--tile", "256", "--max-pixels", "100000"]
    loaded = load_model(rgb_model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=256)
    reference = tmp_path / "reference.ome.zarr"
    with open_slide(source) as lazy:
        expected = segment_large(
            lazy, reference, LARGE_OUTPUTS["ome-zarr"], predictor, Provenance.of(loaded),
            Options(threshold=0.5), skip_background=True,
        )  # fmt: skip
    flags = ["--dask", request.getfixturevalue("cluster")] if dask else []
    out = tmp_path / "out"
    assert cli.main([*argv, "--out", str(out), "--skip-background", *flags]) == 0
    written = zarr.open_array(str(out / "scan.ome.zarr" / "0"), mode="r")
    wanted = zarr.open_array(str(reference / "0"), mode="r")
    assert np.array_equal(np.asarray(written), np.asarray(wanted))
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["background_skipped"] == expected.skipped > 0.3
    assert row["tiles"] == expected.tiles


def test_a_job_skips_the_background_and_reports_it(rgb_model: Path, tmp_path: Path) -> None:
    image, _ = slide(2200, 2600)
    source = tmp_path / "scan.ome.tif"
    write_ome_tiff(source, image)
    config = settings(rgb_model, jobs_dir=tmp_path / "jobs", tile_size=256,
                      max_image_pixels=100_000)  # fmt: skip
    with TestClient(create_app(config)) as client:
        for skip in (False, True):
            query = "?skip_background=true" if skip else ""
            answer = client.post(f"/jobs{query}", content=source.read_bytes())
            assert answer.status_code == 202, answer.text
            job, _ = wait(client, answer.json()["id"])
            assert job["status"] == "succeeded", job
            progress = job["progress"]
            assert progress["tiles_done"] == progress["tiles_total"]
            labels = zipped_labels(client.get(job["result"]).content, tmp_path)
            if not skip:
                whole, tiles = labels, progress["tiles_total"]
                assert job["background_skipped"] is None
    assert progress["tiles_total"] < tiles
    assert job["background_skipped"] > 0.3
    loaded = load_model(rgb_model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=256)
    grid = block_grid(predictor.plan(2200, 2600), SKIP_BLOCK_SIZE)
    runs = find_tissue(image).runs(grid, context_px(predictor))
    for block, run in zip(grid, runs, strict=True):
        here = (block.rows, block.cols)
        assert np.array_equal(labels[here], whole[here] if run else np.zeros_like(whole[here]))
