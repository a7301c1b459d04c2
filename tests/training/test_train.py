"""A real learning test on synthetic shapes, then export and evaluate: the exported file
must reproduce the validation metrics the training run reported."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from training.__main__ import build_parser, config_from_args, main
from training.checkpoint import read_record
from training.config import TrainConfig
from training.train import lr_at

# depth 2, valid: halo 20, sizes 4k >= 44; a 92 px tile gives a 52 px output.
TINY = ["--depth", "2", "--base-channels", "8", "--tile-size", "92", "--val-tile-size", "92"]


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            *TINY,
            "--batch-size",
            "4",
            "--lr",
            "3e-3",
            "--val-fraction",
            "0.25",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shapes: Callable[..., Path]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("learn")
    data = shapes(root / "data", 12)
    started = time.perf_counter()
    rc = _train(data, root / "run", "--epochs", "6", "--tiles-per-epoch", "32")
    return {"rc": rc, "data": data, "dir": root / "run", "seconds": time.perf_counter() - started}


def test_learns_synthetic_shapes(run: dict[str, Any]) -> None:
    assert run["rc"] == 0
    metrics = json.loads((run["dir"] / "metrics.json").read_text())
    best = metrics["best"]["metrics"]
    assert best["mean_dice"] > 0.9, metrics["history"]
    assert best["images"] == 3  # 25 % of 12 images, whole, through the service's tiler
    assert run["seconds"] < 60
    first, last = metrics["history"][0], metrics["history"][-1]
    assert last["train_loss"] < first["train_loss"]
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        assert (run["dir"] / name).is_file(), name
    header = (run["dir"] / "metrics.csv").read_text().splitlines()[0]
    assert "val_dice_foreground" in header
    assert "val_rand_error" in header


def test_exported_model_reproduces_validation_metrics(run: dict[str, Any]) -> None:
    model = run["dir"] / "model.onnx"
    assert main(["export", "--checkpoint", str(run["dir"] / "best.pt"), "--out", str(model)]) == 0
    reported = read_record(run["dir"] / "best.pt")["metrics"]
    out = run["dir"] / "eval.json"
    argv = ["evaluate", "--data", str(run["data"]), "--tile-size", "92", "--json", str(out)]
    assert main([*argv, "--model", str(model), "--baseline", "otsu"]) == 0
    result = json.loads(out.read_text())
    onnx_metrics = result["model"]
    # ORT and torch differ by ~1e-6 in the logits: a pixel at p = 0.5 may flip.
    for key in ("mean_dice", "mean_iou", "pixel_error", "rand_error"):
        assert onnx_metrics[key] == pytest.approx(reported[key], abs=1e-3), key
    assert result["otsu"]["mean_dice"] < onnx_metrics["mean_dice"]
    # The checkpoint through the same tiler gives the training run's figures exactly.
    assert main([*argv, "--model", str(run["dir"] / "best.pt")]) == 0
    evaluated = json.loads(out.read_text())["model"]
    assert {key: evaluated[key] for key in reported} == reported


def test_honest_selection_chooses_on_some_validation_images_and_reports_on_the_rest(
    tmp_path: Path, shapes: Callable[..., Path]
) -> None:
    """--select-images 2 of 4: the best epoch is the best on those 2; the other 2 are only
    measured (report_*), and evaluate / calibrate take the recorded select and report."""
    data = shapes(tmp_path / "data", 16, size=64)
    short = ("--tiles-per-epoch", "8", "--val-fraction", "0.25", "--select-images", "2")
    assert _train(data, tmp_path / "run", "--epochs", "3", *short) == 0
    record = read_record(tmp_path / "run" / "best.pt")
    split = record["split"]
    assert split["select"] + split["report"] == split["val"]
    assert len(split["select"]) == 2
    assert len(split["report"]) == 2
    history = record["history"]
    assert all(row["val_images"] == 2 and row["report_images"] == 2 for row in history)
    best = max(history, key=lambda row: row["val_mean_dice"])  # chosen on select alone
    assert record["epoch"] == best["epoch"]
    model = tmp_path / "model.onnx"
    assert (
        main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(model)])
        == 0
    )
    out = tmp_path / "report.json"
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--tile-size", "92"]
    assert main([*argv, "--split", "report", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["images"] == 2
    assert main(["calibrate", "--model", str(model), "--data", str(data), "--split", "select"]) == 0
    assert _train(data, tmp_path / "bad", "--epochs", "1", "--tiles-per-epoch", "8",
                  "--val-fraction", "0.25", "--select-images", "4") == 2  # fmt: skip


def test_resume_continues_exactly(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    data = shapes(tmp_path / "data", 6, size=64)
    short = ("--tiles-per-epoch", "8", "--elastic-p", "1.0")
    assert _train(data, tmp_path / "once", "--epochs", "2", *short) == 0
    assert _train(data, tmp_path / "twice", "--epochs", "1", *short) == 0
    assert main(["train", "--out", str(tmp_path / "twice"), "--resume", "--epochs", "2"]) == 0
    once = read_record(tmp_path / "once" / "last.pt")
    twice = read_record(tmp_path / "twice" / "last.pt")
    assert twice["epoch"] == 2
    assert [r["epoch"] for r in twice["history"]] == [1, 2]
    for key, value in once["model"].items():
        torch.testing.assert_close(twice["model"][key], value, rtol=0, atol=0, msg=key)


def test_resume_takes_the_given_learning_rate(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    """--resume --lr: the new rate is used and recorded, not the one in the optimiser state."""
    data = shapes(tmp_path / "data", 6, size=64)
    assert _train(data, tmp_path / "run", "--epochs", "1", "--tiles-per-epoch", "8") == 0
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2",
                 "--lr", "1e-4", "--weight-decay", "1e-5"]) == 0  # fmt: skip
    record = read_record(tmp_path / "run" / "last.pt")
    first, second = (row["lr"] for row in record["history"])
    assert first > 1e-4  # the first run's rate
    assert second == pytest.approx(1e-4)
    group = record["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-4)
    assert group["weight_decay"] == pytest.approx(1e-5)


def test_cosine_schedule_known_rates(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    """Full rate up to --decay-from, then a half cosine to --min-lr at the last epoch (a
    function of the epoch alone, which --resume relies on); the history records what ran."""
    cfg = TrainConfig(
        data="d", out="o", epochs=6, lr=1e-3, schedule="cosine", decay_from=2, min_lr=1e-5
    )
    rates = [lr_at(cfg, epoch) for epoch in range(1, 7)]
    span = 1e-3 - 1e-5  # epochs 3, 4, 5: a quarter, half and three quarters from 2 to 6
    quarter, half = span * (1 + 2**-0.5) / 2, span / 2
    expected = [1e-3, 1e-3, 1e-5 + quarter, 1e-5 + half, 1e-5 + span - quarter, 1e-5]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert lr_at(dataclasses.replace(cfg, schedule="constant"), 6) == 1e-3
    with pytest.raises(ValueError, match="decay_from"):
        dataclasses.replace(cfg, decay_from=6)
    with pytest.raises(ValueError, match="min_lr"):
        dataclasses.replace(cfg, min_lr=2e-3)
    data = shapes(tmp_path / "data", 6, size=64)
    schedule = ("--schedule", "cosine", "--decay-from", "1", "--min-lr", "1e-4", "--lr", "1e-3")
    assert _train(data, tmp_path / "run", "--epochs", "3", "--tiles-per-epoch", "4", *schedule,
                  "--val-every", "3") == 0  # fmt: skip
    record = read_record(tmp_path / "run" / "last.pt")
    assert [row["lr"] for row in record["history"]] == pytest.approx([1e-3, 5.5e-4, 1e-4])


def test_cli_maps_every_field_and_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--classes", "bg,a,b", "--batch-norm"]
    )
    cfg = config_from_args(args)
    assert cfg.model.num_classes == 3
    assert cfg.model.batch_norm
    assert cfg.classes == ("bg", "a", "b")
    assert main(["train", "--data", "d", "--out", "o", "--tile-size", "570"]) == 2
    assert "nearest valid sizes: 556 or 572" in capsys.readouterr().err
    offset = config_from_args(build_parser().parse_args(["train", "--label-offset=-0.6, 0.25"]))
    assert offset.label_offset == (-0.6, 0.25)
    assert TrainConfig.from_dict(offset.to_dict()).label_offset == (-0.6, 0.25)  # checkpoints
    older = {k: v for k, v in offset.to_dict().items() if k != "label_offset"}
    assert TrainConfig.from_dict(older).label_offset == (0.0, 0.0)  # runs before the option
    with pytest.raises(SystemExit) as exited:
        main(["train", "--label-offset=up,0"])
    assert exited.value.code == 2
    assert "invalid comma-separated float value: 'up,0'" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--out", "o", "--label-offset=1,2,3"]) == 2
    assert "label_offset is dy,dx in px" in capsys.readouterr().err
