"""A large image stopped anywhere goes on from where it stopped: a run interrupted after
some blocks (or in its object passes) and called again with the same ``resume`` folder
runs only the blocks left (the object passes only if they had not finished) and writes
the same bytes as a run that was never stopped; a folder of another run starts afresh."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tifffile

import app.pipeline.blocks
import app.pipeline.large
import app.pipeline.objects
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance
from app.codecs.pyramid import LabelStore
from app.inference import Predictor, load_model
from app.pipeline.large import segment_large
from app.pipeline.resume import Ledger, _blocks, run_key
from tests.nets import UNetSpec, default_card, save_model
from tests.samples import smooth_noise

SPEC = UNetSpec(depth=2, base=2)
IMAGE = smooth_noise(1100, 1500, seed=4)[:, :, None]
BLOCK = 300  # 4 x 5 blocks


class StopError(Exception):
    """The interruption (a kill -9 is tested on a real server: tests/jobs)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Predictor, Provenance]]:
    folder = tmp_path_factory.mktemp("resume")
    loaded = {}
    for method in ("components", "watershed"):
        objects: dict[str, object] = {"method": method}
        if method == "watershed":
            objects |= {"boundary_class": 1, "seed_threshold": 0.45}
        path = folder / f"{method}.onnx"
        save_model(path, SPEC, seed=3, card=default_card(SPEC, name=method, objects=objects))
        model = load_model(path)
        predictor = Predictor(model.engine.run, model.card, tile_size=128)
        loaded[method] = (predictor, Provenance.of(model))
    return loaded


def run(
    model: tuple[Predictor, Provenance], out: Path, fmt: str, **options: Any
) -> tuple[int, list[str]]:
    """(tiles run, stages seen) of one run into ``out``."""
    predictor, info = model
    stages: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        stages.append(f"{stage} {done} {total}" if stage == "resumed" else stage)

    result = segment_large(
        IMAGE, out, LARGE_OUTPUTS[fmt], predictor, info, Options(threshold=0.5),
        block_size=BLOCK, progress=progress, **options,
    )  # fmt: skip
    return result.tiles, stages


def files(path: Path) -> dict[str, bytes]:
    """Every file of an output (a store's chunks, a GeoJSON) by its relative path; an
    OME-TIFF's levels (its OME-XML holds a new UUID each time it is written)."""
    if path.name.endswith(".tif"):
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            return {f"level {k}": level.asarray().tobytes() for k, level in enumerate(levels)}
    if path.is_file():
        return {"the file": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def interrupt(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, after: int) -> None:
    """``module.name`` raises StopError at its call number ``after + 1``."""
    real: Callable[..., Any] = getattr(module, name)
    calls = [0]

    def stopped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise StopError
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stopped)


@pytest.mark.parametrize(
    ("method", "fmt", "options"),
    [
        ("components", "ome-zarr", {"probability": True}),
        ("components", "geojson", {}),
        ("watershed", "instances", {}),
        ("components", "ome-tiff", {"skip_background": True}),
    ],
)
def test_a_run_stopped_after_some_blocks_runs_only_the_rest(
    method: str,
    fmt: str,
    options: dict[str, Any],
    models: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, ext = models[method], LARGE_OUTPUTS[fmt].extension
    whole, stages = run(model, tmp_path / "whole" / f"out.{ext}", fmt, **options)
    assert not any(s.startswith("resumed") for s in stages)
    out, resume = tmp_path / "stopped" / f"out.{ext}", tmp_path / "stopped" / ".resume"
    out.parent.mkdir()
    with monkeypatch.context() as patch:
        interrupt(patch, app.pipeline.blocks, "write_block", after=7)
        with pytest.raises(StopError):
            run(model, out, fmt, resume=resume, **options)
    assert not out.exists()
    first = sum(_blocks(resume / "blocks").values())
    assert len(_blocks(resume / "blocks")) == 7
    rest, stages = run(model, out, fmt, resume=resume, **options)
    assert f"resumed {first} 7" in stages[:2]  # after the background's, if skipped
    assert first > 7  # several tiles a block
    assert first + rest == whole  # not one tile run twice
    assert files(out) == files(tmp_path / "whole" / f"out.{ext}")
    assert not resume.exists()


def test_a_run_stopped_in_its_object_passes_runs_no_block_again(
    models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models["watershed"]
    run(model, tmp_path / "whole.geojson", "geojson")
    out, resume = tmp_path / "out.geojson", tmp_path / ".resume"
    with monkeypatch.context() as patch:  # the last pass, half done
        interrupt(patch, app.pipeline.objects, "relabel_block", after=9)
        with pytest.raises(StopError):
            run(model, out, "geojson", resume=resume)
    tiles, stages = run(model, out, "geojson", resume=resume)
    assert tiles == 0
    assert "objects" in stages
    assert files(out) == files(tmp_path / "whole.geojson")
    with monkeypatch.context() as patch:  # stopped once the objects are found: not again
        interrupt(patch, app.pipeline.large, "_finish", after=0)
        with pytest.raises(StopError):
            run(model, tmp_path / "again.geojson", "geojson", resume=tmp_path / ".again")
    tiles, stages = run(model, tmp_path / "again.geojson", "geojson", resume=tmp_path / ".again")
    assert tiles == 0
    assert "objects" not in stages
    assert "outlines" not in stages
    assert files(tmp_path / "again.geojson") == files(tmp_path / "whole.geojson")


def test_a_run_stopped_once_its_levels_are_built_does_not_build_them_again(
    models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, resume = models["components"], tmp_path / ".resume"
    for name in ("whole", "out"):
        (tmp_path / name).mkdir()
    run(model, tmp_path / "whole" / "out.ome.zarr", "ome-zarr")
    out = tmp_path / "out" / "out.ome.zarr"
    with monkeypatch.context() as patch:  # the store is ready, not yet in place
        interrupt(patch, LabelStore, "describe", after=0)
        with pytest.raises(StopError):
            run(model, out, "ome-zarr", resume=resume)
    tiles, stages = run(model, out, "ome-zarr", resume=resume)
    assert tiles == 0
    assert "levels" not in stages
    assert files(out) == files(tmp_path / "whole" / "out.ome.zarr")


def test_a_folder_of_another_run_starts_afresh(
    models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, resume = models["components"], tmp_path / ".resume"
    a, b, c = (tmp_path / name / "out.ome.zarr" for name in "abc")
    for out in (a, b, c):
        out.parent.mkdir()
    with monkeypatch.context() as patch:
        interrupt(patch, app.pipeline.blocks, "write_block", after=5)
        with pytest.raises(StopError):
            run(model, a, "ome-zarr", resume=resume)
    tiles, stages = run(model, b, "ome-zarr", resume=resume, probability=True)
    assert not any(s.startswith("resumed") for s in stages)  # another output: from zero
    whole, _ = run(model, c, "ome-zarr", probability=True)
    assert tiles == whole
    assert files(b) == files(c)


def test_the_ledger_keeps_whole_lines_and_its_key(tmp_path: Path) -> None:
    key = run_key(facts=("ome-zarr", 1), image=("a.tif", 10, 20))
    assert key != run_key(facts=("ome-zarr", 2), image=("a.tif", 10, 20))
    ledger = Ledger(tmp_path / "r", key)
    assert not ledger.resumed
    (ledger.store).mkdir()
    ledger.begin()
    ledger.finished(3, 40)
    ledger.finished(11, 36)
    with (tmp_path / "r" / "blocks").open("a") as out:
        out.write("12 3")  # cut short by a kill: "12 36\n" was being written
    again = Ledger(tmp_path / "r", key)
    assert again.resumed
    assert again.done == {3: 40, 11: 36}
    other = Ledger(tmp_path / "r", run_key(facts=("ome-tiff",), image=()))
    assert not other.resumed
    assert other.done == {}
    assert json.dumps(sorted(p.name for p in (tmp_path / "r").iterdir())) == "[]"
