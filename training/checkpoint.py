"""Checkpoints (``best.pt``, ``last.pt``) and the model card they imply.

A checkpoint is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(weights_only=True)`` (no pickled code):

    config         TrainConfig.to_dict()
    model          the UNet's state_dict
    normalization  [scale, offset]: network input = v * scale + offset, v on 0-255
    split          {"train": [names], "val": [names]}
    epoch          last finished epoch (1-based)
    metrics        validation metrics of that epoch (None before the first validation)
    optimizer, scaler, history, best   what ``--resume`` needs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.unet import UNet

FORMAT = "unet-training/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (on the CPU, eval mode) and its record."""

    model: UNet
    config: TrainConfig
    record: dict[str, Any]

    @property
    def normalization(self) -> tuple[float, float]:
        scale, offset = self.record["normalization"]
        return float(scale), float(offset)


def save_checkpoint(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated ``last.pt``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **record}, tmp)
    tmp.replace(path)


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    record: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a checkpoint of `python -m training train` (format {FORMAT})"
        )
    return record


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint's network with its weights, in eval mode on the CPU."""
    record = read_record(path)
    config = TrainConfig.from_dict(record["config"])
    model = UNet(config.model)
    model.load_state_dict(record["model"])
    model.eval()
    return Checkpoint(model, config, record)


def model_card(
    config: TrainConfig,
    normalization: tuple[float, float],
    *,
    split: dict[str, list[str]] | None = None,
    epoch: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``unet`` metadata document of API.md ("The model file"), plus how the
    model was trained and what it scored on its validation split.
    """
    m = config.model
    scale, offset = normalization
    outputs = ["logits", "image_scores"] if m.classification_head else ["logits"]
    return {
        "name": config.name,
        "version": config.version,
        "classes": list(config.classes),
        "in_channels": m.in_channels,
        "padding": m.padding,
        "halo": m.halo,
        "size_multiple": m.size_multiple,
        "size_offset": m.size_offset,
        "min_size": m.min_size,
        "normalization": {"scale": scale, "offset": offset},
        "activation": m.activation,
        "outputs": outputs,
        "architecture": {
            "depth": m.depth,
            "base_channels": m.base_channels,
            "batch_norm": m.batch_norm,
            "dropout": m.dropout,
            "classification_head": m.classification_head,
            "deep_supervision": m.deep_supervision,
        },
        "labels": {
            "mode": config.label_mode,
            "foreground_value": config.foreground_value,
            "objects": config.objects,
        },
        "training": {
            "data": config.data,
            "split": split,
            "epochs": epoch,
            "recipe": config.to_dict(),
        },
        "validation": metrics,
    }


def card_of(checkpoint: Checkpoint) -> dict[str, Any]:
    r = checkpoint.record
    return model_card(
        checkpoint.config,
        checkpoint.normalization,
        split=r.get("split"),
        epoch=r.get("epoch"),
        metrics=r.get("metrics"),
    )
