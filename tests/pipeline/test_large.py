"""Images beyond memory: streamed disk to disk (any block size, with and without Dask) the
class map and 16-bit probability equal the in-memory Predictor's bit for bit; the outputs
open in ome-zarr, zarr, tifffile and ome-types; the command line's batch semantics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import app.pipeline.batch
from app import cli
from app.codecs.encode import to_uint16
from app.codecs.errors import CorruptImageError
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance
from app.codecs.slides import open_slide
from app.inference import Predictor, load_model
from app.inference.blocks import block_grid
from app.inference.objects import class_probability
from app.inference.predictor import FLIPS
from app.pipeline.large import segment_large
from tests.nets import PAPER, default_card, save_model
from tests.samples import (
    gradient_rgb,
    noise,
    png,
    smooth_noise,
    truncated,
    write_ome_tiff,
    write_ome_zarr,
    write_svs,
)

TILE = 380  # 16 x 27 tiles over 3000 x 5000


@dataclass(frozen=True)
class Reference:
    tif: Path
    model: Path
    mask: np.ndarray
    probability: np.ndarray  # uint16, round(p * 65535)
    threshold: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("large")
    model = folder / "paper.onnx"
    save_model(model, PAPER, seed=5, card=default_card(PAPER, name="paper"))
    image = smooth_noise(3000, 5000, seed=2)
    tif = folder / "slide.ome.tif"
    write_ome_tiff(tif, image)
    loaded = load_model(model)
    probs, _ = Predictor(loaded.engine.run, loaded.card, tile_size=TILE).probabilities(image)
    threshold = float(np.median(probs[0]))  # about half the pixels foreground
    mask = (probs[0] >= threshold).astype(np.uint8)
    return Reference(tif, model, mask, to_uint16(class_probability(probs, 1)), threshold)


def read_store(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    group = zarr.open_group(str(path), mode="r")
    probability = group["probability/0"][:] if "probability" in group else None
    return group["0"][:], probability


@pytest.mark.parametrize("block_size", [500, 2048, 6000])
def test_streamed_equals_in_memory_for_any_block_size(
    block_size: int, reference: Reference, tmp_path: Path
) -> None:
    loaded = load_model(reference.model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=TILE)
    options = Options(threshold=reference.threshold)
    path = tmp_path / "out.ome.zarr"
    with open_slide(reference.tif) as slide:
        result = segment_large(
            slide, path, LARGE_OUTPUTS["ome-zarr"], predictor,
            Provenance(loaded.card, loaded.engine.sha256), options,
            probability=True, block_size=block_size,
        )  # fmt: skip
    labels, probability = read_store(path)
    assert np.array_equal(labels, reference.mask)
    assert np.array_equal(probability, reference.probability)
    assert 0.3 < labels.mean() < 0.7
    grid = block_grid(predictor.plan(3000, 5000), block_size)
    assert result.tiles == grid.tile_count() >= 16 * 27  # what a job's progress counts to
    assert list(tmp_path.iterdir()) == [path]  # the temporary store is gone


@pytest.mark.parametrize("block_size", [500, 6000])
def test_tta_streamed_equals_tta_in_memory(
    block_size: int, reference: Reference, tmp_path: Path
) -> None:
    """The mean over four flips, block by block (mirrored blocks meet other tiles)."""
    image = smooth_noise(900, 1300, seed=7)
    loaded = load_model(reference.model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=TILE)
    probs, _ = predictor.probabilities(image, tta=True)
    options = Options(threshold=reference.threshold, tta=True)
    path = tmp_path / "tta.ome.zarr"
    result = segment_large(
        image[:, :, None], path, LARGE_OUTPUTS["ome-zarr"], predictor,
        Provenance(loaded.card, loaded.engine.sha256), options, probability=True,
        block_size=block_size,
    )  # fmt: skip
    labels, probability = read_store(path)
    assert np.array_equal(labels, probs[0] >= reference.threshold)
    assert np.array_equal(probability, to_uint16(class_probability(probs, 1)))
    grid = block_grid(predictor.plan(900, 1300), block_size)
    assert result.tiles == grid.tile_count(FLIPS) >= 4 * len(predictor.plan(900, 1300))


def run_cli(reference: Reference, out: Path, *inputs: Path | str, **flags: object) -> int:
    argv = [str(i) for i in inputs]
    argv += ["--model", str(reference.model), "--out", str(out), "--tile", str(TILE)]
    argv += ["--threshold", repr(reference.threshold), "--max-pixels", "1000000"]
    for flag, value in flags.items():
        name = "--" + flag.replace("_", "-")
        argv += [name] if value is True else [name, str(value)]
    return cli.main(argv)


@pytest.mark.parametrize("dask", [False, True], ids=["in-process", "dask"])
def test_the_command_line_with_and_without_dask_equals_in_memory(
    dask: bool, reference: Reference, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A batch of a large OME-TIFF (blocks as tasks) and two small PNGs (one task each)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "slide.ome.tif").symlink_to(reference.tif)
    small = [smooth_noise(300, 400, seed=s) for s in (11, 12)]
    for index, image in enumerate(small):
        (inputs / f"small{index}.png").write_bytes(png(image))
    flags: dict[str, object] = {"probability": True}
    if dask:
        flags["dask"] = request.getfixturevalue("cluster")
    out = tmp_path / "out"
    assert run_cli(reference, out, inputs, **flags) == 0  # the slide is above --max-pixels
    labels, probability = read_store(out / "slide.ome.zarr")
    assert np.array_equal(labels, reference.mask)
    assert np.array_equal(probability, reference.probability)
    rows = {Path(r["input"]).name: r for r in json.loads((out / "summary.json").read_text())}
    assert {name: (r["status"], r["format"]) for name, r in rows.items()} == {
        "slide.ome.tif": ("ok", "ome-zarr"), "small0.png": ("ok", "png"),
        "small1.png": ("ok", "png"),
    }  # fmt: skip
    assert (rows["slide.ome.tif"]["width"], rows["slide.ome.tif"]["levels"]) == (5000, 5)
    loaded = load_model(reference.model)
    predictor = Predictor(loaded.engine.run, loaded.card, tile_size=TILE)
    for index, image in enumerate(small):
        with Image.open(out / f"small{index}.png") as written:
            expected = predictor.predict(image, threshold=reference.threshold).mask
            assert np.array_equal(np.asarray(written), expected)


def test_the_ome_zarr_opens_in_ome_zarr_with_its_pyramid(
    reference: Reference, tmp_path: Path
) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader
    from ome_zarr_models.v04.image_label import ImageLabel

    assert run_cli(reference, tmp_path, reference.tif) == 0
    path = tmp_path / "slide.ome.zarr"
    node = next(iter(Reader(parse_url(str(path)))()))
    assert {type(spec) for spec in node.specs} == {Label, Multiscales}
    assert len(node.data) == 5
    for k, level in enumerate(node.data):
        assert np.array_equal(np.asarray(level), reference.mask[:: 2**k, :: 2**k])
    label = ImageLabel.from_zarr(zarr.open_group(str(path), mode="r"))
    metadata = label.attributes.image_label
    assert metadata is not None
    assert metadata.properties is not None
    assert [p.model_dump()["class"] for p in metadata.properties] == ["background", "foreground"]


def test_the_ome_tiff_opens_in_tifffile_and_validates(reference: Reference, tmp_path: Path) -> None:
    import ome_types

    assert run_cli(reference, tmp_path, reference.tif, format="ome-tiff") == 0
    with tifffile.TiffFile(tmp_path / "slide.ome.tif") as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels][:2] == [(3000, 5000), (1500, 2500)]
        assert all(page.is_tiled for page in tif.pages)
        assert np.array_equal(levels[0].asarray(), reference.mask)
        assert np.array_equal(levels[2].asarray(), reference.mask[::4, ::4])
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
    assert (ome.images[0].pixels.size_x, ome.images[0].pixels.size_y) == (5000, 3000)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_batch_of_good_and_bad_files_goes_on_and_resumes(
    reference: Reference, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "small.png").write_bytes(png(noise(200, 300, seed=1)))
    (inputs / "slide.ome.tif").write_bytes(reference.tif.read_bytes())
    cut = tmp_path / "cut.tif"  # a large tiled TIFF whose second half is gone
    tifffile.imwrite(cut, smooth_noise(1500, 1000, 4), tile=(256, 256), compression="zlib")
    (inputs / "cut.tif").write_bytes(truncated(cut.read_bytes(), 0.5))
    (inputs / "junk.tif").write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "out"
    assert run_cli(reference, out, inputs) == 1
    rows = {Path(r["input"]).name: r for r in json.loads((out / "summary.json").read_text())}
    assert {n: r["status"] for n, r in rows.items()} == {
        "cut.tif": "failed", "junk.tif": "failed", "slide.ome.tif": "ok", "small.png": "ok",
    }  # fmt: skip
    assert "cut.tif: the region rows" in rows["cut.tif"]["error"]
    assert rows["small.png"]["format"] == "png"
    assert rows["slide.ome.tif"]["format"] == "ome-zarr"
    assert sorted(p.name for p in out.iterdir()) == ["slide.ome.zarr", "small.png", "summary.json"]
    assert run_cli(reference, out, inputs) == 1  # again: the finished ones are skipped
    rows = {Path(r["input"]).name: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["slide.ome.tif"]["status"] == rows["small.png"]["status"] == "skipped"


def test_a_block_failing_on_dask_leaves_nothing_behind(
    reference: Reference, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A truncated tiled TIFF: some blocks fail on the workers while others run; the run
    cancels the rest, waits for the running ones, and removes the unfinished store."""
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, smooth_noise(3000, 2500, 4), tile=(256, 256), compression="zlib")
    cut.write_bytes(truncated(cut.read_bytes(), 0.6))
    out = tmp_path / "out"
    flags = {"dask": request.getfixturevalue("cluster")}
    assert run_cli(reference, out, cut, format="ome-zarr", **flags) == 1
    row = json.loads((out / "summary.json").read_text())[0]
    assert "cut.tif: the region rows" in row["error"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_ctrl_c_in_a_large_image_leaves_nothing_half_written(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.pipeline.blocks

    real, calls = app.pipeline.blocks.write_block, []

    def interrupted(*args: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(app.pipeline.blocks, "write_block", interrupted)
    assert run_cli(reference, tmp_path, reference.tif, format="ome-tiff") == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_the_output_never_replaces_the_input(reference: Reference, tmp_path: Path) -> None:
    """x.ome.zarr segmented into its own folder would be x.ome.zarr: refused, input kept."""
    source = tmp_path / "slide.ome.zarr"
    write_ome_zarr(source, smooth_noise(1100, 1000, seed=9))
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    for flags in ({}, {"overwrite": True}):
        assert run_cli(reference, tmp_path, source, format="ome-zarr", **flags) == 1
        row = json.loads((tmp_path / "summary.json").read_text())[0]
        assert "would replace the input" in row["error"]
        assert sorted(p.relative_to(source) for p in source.rglob("*")) == before


def test_a_failed_overwrite_puts_the_old_output_back(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli(reference, tmp_path, reference.tif, format="ome-tiff") == 0
    old = (tmp_path / "slide.ome.tif").read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise CorruptImageError("the disk went away")

    monkeypatch.setattr(app.pipeline.batch, "segment_large", broken)
    assert run_cli(reference, tmp_path, reference.tif, format="ome-tiff", overwrite=True) == 1
    assert (tmp_path / "slide.ome.tif").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.ome.tif", "summary.json"]


def test_a_small_ome_zarr_goes_the_in_memory_way(reference: Reference, tmp_path: Path) -> None:
    """Below --max-pixels an OME-Zarr gets the default png, read through its lazy reader."""
    image = smooth_noise(600, 700, seed=8)
    write_ome_zarr(tmp_path / "small.ome.zarr", image)
    out = tmp_path / "out"
    assert run_cli(reference, out, tmp_path / "small.ome.zarr") == 0
    loaded = load_model(reference.model)
    expected = Predictor(loaded.engine.run, loaded.card, tile_size=TILE).predict(
        image, threshold=reference.threshold
    )
    with Image.open(out / "small.png") as png_file:
        assert np.array_equal(np.asarray(png_file), expected.mask)


def test_sigterm_stops_like_ctrl_c_leaving_nothing_half_written(
    reference: Reference, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "app.cli", str(reference.tif), "--model", str(reference.model)]
    command += ["--out", str(tmp_path), "--tile", str(TILE), "--tta", "--max-pixels", "1000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # tqdm's bar: the blocks are running
        if "blocks" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("kind", ["rgb-svs", "gray-16-bit"])
def test_rgb_slides_and_16_bit_images_stream_exactly(
    kind: str, rgb_model: Path, binary_model: Path, tmp_path: Path
) -> None:
    """An Aperio SVS (JPEG tiles, RGB model) and a 16-bit OME-TIFF: streamed with blocks
    of ~300 px, the class map equals the in-memory prediction of the decoded pixels."""
    if kind == "rgb-svs":
        model, source = rgb_model, tmp_path / "scan.svs"
        write_svs(source, gradient_rgb(900, 1300))
    else:
        model, source = binary_model, tmp_path / "deep.ome.tif"
        write_ome_tiff(source, (smooth_noise(900, 1300, seed=5).astype(np.uint16) * 257) + 100)
    pixels = tifffile.imread(source)  # tifffile's whole level 0, as a user would read it
    loaded = load_model(model)
    predictor = Predictor(loaded.engine.run, loaded.card)
    probs, _ = predictor.probabilities(pixels)
    threshold = float(np.median(probs[0]))
    path = tmp_path / "out.ome.zarr"
    with open_slide(source) as slide:
        segment_large(
            slide, path, LARGE_OUTPUTS["ome-zarr"], predictor,
            Provenance(loaded.card, loaded.engine.sha256), Options(threshold=threshold),
            block_size=300,
        )  # fmt: skip
    labels, _ = read_store(path)
    assert np.array_equal(labels, probs[0] >= threshold)
