"""Export: ONNX Runtime parity for every option, the embedded card, loading with no sidecar."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from app.inference import Predictor, load_model
from app.inference.card import sidecar_path
from training.checkpoint import Checkpoint, model_card
from training.config import TrainConfig, UNetConfig
from training.export import (
    FP32_TOLERANCE,
    ExportParityError,
    export_checkpoint,
    parity,
    to_onnx,
)
from training.unet import UNet

API_FIELDS = {
    "name",
    "version",
    "classes",
    "in_channels",
    "padding",
    "halo",
    "size_multiple",
    "size_offset",
    "min_size",
    "normalization",
    "activation",
}


def _trained_like(model: UNet) -> UNet:
    """Random BatchNorm statistics, so that the exported BN is not the identity."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[operator]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
    return model.eval()


@pytest.mark.parametrize(
    ("padding", "batch_norm", "head", "deep", "classes"),
    [
        (*combo, 2 if i % 2 else 3)
        for i, combo in enumerate(
            itertools.product(["valid", "same"], [False, True], [False, True], [False, True])
        )
    ],
)
def test_parity_every_option(
    padding: str, batch_norm: bool, head: bool, deep: bool, classes: int
) -> None:
    torch.manual_seed(0)
    config = UNetConfig(
        base_channels=4,
        depth=3,
        padding=padding,  # type: ignore[arg-type]
        batch_norm=batch_norm,
        classification_head=head,
        deep_supervision=deep,
        num_classes=classes,
    )
    model = _trained_like(UNet(config))
    proto = to_onnx(model)
    assert [o.name for o in proto.graph.output] == (
        ["logits", "image_scores"] if head else ["logits"]
    )
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]
    assert parity(model, proto) <= FP32_TOLERANCE  # several valid sizes, batch 1 and 2


def _checkpoint(config: UNetConfig, tmp_path: Path) -> Checkpoint:
    torch.manual_seed(0)
    classes = ("background", "cell") if config.num_classes == 2 else ("bg", "a", "b")
    cfg = TrainConfig(data=str(tmp_path), classes=classes, model=config, name="t", version="2")
    record = {
        "normalization": [1 / 255, 0.0],
        "split": {"train": ["a"], "val": ["b"]},
        "epoch": 3,
        "metrics": {"mean_dice": 0.5},
    }
    return Checkpoint(_trained_like(UNet(config)), cfg, record)


@pytest.mark.parametrize("head", [False, True])
def test_exported_file_loads_in_the_service_without_sidecar(tmp_path: Path, head: bool) -> None:
    config = UNetConfig(base_channels=4, depth=4, classification_head=head, deep_supervision=head)
    path = tmp_path / "model.onnx"
    report = export_checkpoint(_checkpoint(config, tmp_path), path)
    assert report.max_abs_diff <= FP32_TOLERANCE
    assert not sidecar_path(path).exists()
    document = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["unet"])
    assert set(document) >= API_FIELDS | {"training", "validation", "architecture"}
    assert document["validation"] == {"mean_dice": 0.5}
    assert document["training"]["split"]["val"] == ["b"]
    loaded = load_model(path, "cpu")
    assert (loaded.card.name, loaded.card.version, loaded.card.halo) == ("t", "2", 92)
    assert loaded.card.classes == ["background", "cell"]
    assert loaded.engine.output_names == (["logits", "image_scores"] if head else ["logits"])
    frame = np.random.default_rng(0).integers(0, 256, (100, 130), dtype=np.uint8)
    prediction = Predictor(loaded.engine.run, loaded.card, tile_size=204).predict(frame)
    assert prediction.mask.shape == (100, 130)


def test_card_matches_the_api_contract() -> None:
    cfg = TrainConfig(model=UNetConfig(num_classes=3), classes=("bg", "a", "b"))
    card = model_card(cfg, (0.02, -2.5))
    assert card["activation"] == "softmax"
    assert (card["halo"], card["size_multiple"], card["size_offset"], card["min_size"]) == (
        92,
        16,
        12,
        188,
    )
    assert card["normalization"] == {"scale": 0.02, "offset": -2.5}


def test_parity_failure_writes_no_file(tmp_path: Path) -> None:
    config = UNetConfig(base_channels=2, depth=2)
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportParityError, match="above the tolerance"):
        export_checkpoint(_checkpoint(config, tmp_path), path, tolerance=0.0)
    assert not path.exists()


def test_fp16_export(tmp_path: Path) -> None:
    config = UNetConfig(base_channels=4, depth=2)
    ckpt = _checkpoint(config, tmp_path)
    report = export_checkpoint(ckpt, tmp_path / "half.onnx", fp16=True)
    assert report.max_abs_diff <= report.tolerance
    assert next(ckpt.model.parameters()).dtype == torch.float32  # the caller's model unchanged
    types = {t.data_type for t in onnx.load(str(tmp_path / "half.onnx")).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
