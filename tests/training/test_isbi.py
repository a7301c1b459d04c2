"""Smoke test on the real ISBI 2012 slices (../shared/data/isbi2012), skipped when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import Augment
from training.data import TileDataset, load_samples, normalization_stats
from training.evaluate import evaluate_masks, otsu_masks, otsu_polarity
from training.losses import SegmentationLoss
from training.unet import UNet, UNetConfig

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012" / "train"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (ISBI / "image").is_dir(),
        reason=f"ISBI 2012 data not found at {ISBI} (see ../shared/data/isbi2012/README.md)",
    ),
]


def test_isbi_reads_trains_a_step_and_scores_a_baseline() -> None:
    samples = load_samples(ISBI, foreground_value=0, names=["0", "1", "2"])  # membranes = 0
    assert samples[0].image.shape == (512, 512, 1)
    membrane = float(np.mean([s.label.mean() for s in samples]))
    assert 0.1 < membrane < 0.4  # about a fifth of the pixels are membrane
    config = UNetConfig(base_channels=4)  # the paper's geometry, few channels
    dataset = TileDataset(
        samples,
        tile_size=252,
        halo=config.halo,
        length=2,
        num_classes=2,
        normalization=normalization_stats(samples),
        augment=Augment(elastic_p=1.0),
        objects="background",  # the cells are the objects the membranes separate
    )
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 1, 252, 252)
    assert batch["label"].shape == (2, 68, 68)
    assert float(dataset.weights[0].max()) > 5  # border weights between touching cells
    model = UNet(config)
    loss = SegmentationLoss()(model(batch["image"]), batch["label"], batch["weight"])
    loss.backward()
    assert torch.isfinite(loss)
    otsu = evaluate_masks(
        otsu_masks(otsu_polarity(samples)), samples, ["background", "membrane"], "background"
    )
    assert otsu_polarity(samples) == "dark"
    assert 0 < otsu["pixel_error"] < 0.5
    assert otsu["rand_error"] is not None
