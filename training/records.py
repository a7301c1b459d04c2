"""What a run leaves behind besides checkpoints: metrics.csv, metrics.json, curves.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def flatten(metrics: dict[str, Any] | None, prefix: str = "val_") -> dict[str, float | None]:
    """{"dice": {"membrane": 0.9}, "pixel_error": 0.1} -> {"val_dice_membrane": 0.9, ...}."""
    flat: dict[str, float | None] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}_"))
        elif isinstance(value, int | float) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def write_metrics(run_dir: Path, history: list[dict[str, Any]], best: dict[str, Any]) -> None:
    """metrics.csv (one row per epoch, empty cells where an epoch was not validated)
    and metrics.json ({"history": rows, "best": {"epoch", "metrics"}})."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with (run_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)
    document = {"history": history, "best": best}
    (run_dir / "metrics.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def plot_curves(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    """curves.png: training loss, and the validation Dice/IoU, per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["train_loss"] for row in history], marker=".")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (("val_mean_dice", "Dice"), ("val_mean_iou", "IoU")):
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            right.plot(*zip(*points, strict=True), marker="o", label=label)
    right.set(xlabel="epoch", ylabel="validation (non-background mean)", title="validation")
    right.set_ylim(0, 1)
    right.legend(loc="lower right")
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
