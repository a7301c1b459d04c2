"""A model card's pixel size against a slide's: the same size (within 10 %) runs, another
is refused with both sizes (the command line, a job at submission), --pixel-size /
pixel_size stand for what the file says, an unstated size is one WARNING."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import cli
from app.main import create_app
from tests.conftest import settings
from tests.nets import RGB, default_card, save_model
from tests.samples import gradient_rgb, write_ome_tiff

IMAGE = gradient_rgb(600, 700)


@pytest.fixture(scope="module")
def half_micron(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB model trained at 0.5 µm/px (its card says so)."""
    path = tmp_path_factory.mktemp("resolution") / "half.onnx"
    return save_model(path, RGB, card=default_card(RGB, name="half", pixel_size_um=0.5))


def scan(folder: Path, name: str, size: float | None) -> Path:
    path = folder / f"{name}.ome.tif"
    metadata = {"PhysicalSizeX": size, "PhysicalSizeY": size} if size else {}
    write_ome_tiff(path, IMAGE, metadata=metadata)
    return path


def run(model: Path, out: Path, *argv: str) -> list[dict[str, object]]:
    base = ["--model", str(model), "--out", str(out), "--tile", "256", "--max-pixels", "1000"]
    cli.main([*argv, *base])
    return list(json.loads((out / "summary.json").read_text()))


def test_the_command_line_runs_the_models_size_and_refuses_another(
    half_micron: Path, tmp_path: Path
) -> None:
    near, far = scan(tmp_path, "near", 0.52), scan(tmp_path, "far", 0.25)
    rows = {
        Path(str(r["input"])).name: r for r in run(half_micron, tmp_path / "a", str(near), str(far))
    }
    assert rows["near.ome.tif"]["status"] == "ok"
    assert rows["near.ome.tif"]["pixel_size_um"] == [0.52, 0.52]
    failed = rows["far.ome.tif"]
    assert failed["status"] == "failed"
    assert "0.25 x 0.25 µm/px and the model half works at 0.5 µm/px" in str(failed["error"])
    (row,) = run(half_micron, tmp_path / "b", str(far), "--pixel-size", "0.5")
    assert (row["status"], row["pixel_size_um"]) == ("ok", [0.5, 0.5])


def test_an_unstated_size_runs_with_one_warning(
    half_micron: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = scan(tmp_path, "bare", None)
    with caplog.at_level(logging.WARNING, logger="app.pipeline"):
        (row,) = run(half_micron, tmp_path / "out", str(bare))
    assert row["status"] == "ok"
    assert "pixel_size_um" not in row
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "bare.ome.tif states no pixel size and the model half works at 0.5 µm/px: segmented "
        "as if it were; give --pixel-size (jobs: pixel_size) to have it checked"
    ]


def test_a_model_without_a_size_checks_nothing(rgb_model: Path, tmp_path: Path) -> None:
    (row,) = run(rgb_model, tmp_path / "out", str(scan(tmp_path, "far", 0.25)))
    assert (row["status"], row["pixel_size_um"]) == ("ok", [0.25, 0.25])


def test_a_job_at_another_size_is_422_at_submission(half_micron: Path, tmp_path: Path) -> None:
    body = scan(tmp_path, "far", 0.25).read_bytes()
    config = settings(half_micron, jobs_dir=tmp_path / "jobs", max_image_pixels=1000)
    with TestClient(create_app(config)) as client:
        refused = client.post("/jobs", content=body)
        assert refused.status_code == 422
        assert "works at 0.5 µm/px" in refused.json()["detail"]
        assert client.post("/jobs?pixel_size=0.5", content=body).status_code == 202
        assert client.post("/jobs?pixel_size=0", content=body).status_code == 422
        assert client.get("/model").json()["pixel_size_um"] == 0.5
