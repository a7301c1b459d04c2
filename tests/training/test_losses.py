"""Losses and the paper's weight map, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    SegmentationLoss,
    border_weight_map,
    class_balance_weights,
    object_labels,
    soft_dice_loss,
    weighted_cross_entropy,
)
from training.unet import UNetOutput


def test_class_balance_worked_example() -> None:
    label = np.zeros((3, 4), dtype=np.int64)
    label[0, :3] = 1  # 3 of 12 pixels: 12 / (2 * 3) = 2; background 12 / (2 * 9) = 2/3
    w = class_balance_weights(label, 2)
    assert w[0, 0] == pytest.approx(2.0)
    assert w[2, 2] == pytest.approx(2 / 3)
    assert w.mean() == pytest.approx(1.0)


def test_weight_map_hand_computed() -> None:
    """Three one-pixel objects in a 5 x 5 image (w0 = 10, sigma = 5):

        A . . . B        A = (0, 0), B = (0, 4), C = (4, 2)
        . . . . .
        . . . . .
        . . . . .
        . . C . .

    (0, 2): distances 2 (A), 2 (B), 4 (C) -> d1 + d2 = 4 (C, the third, is not used)
    (2, 2): sqrt(8) (A), sqrt(8) (B), 2 (C) -> d1 + d2 = 2 + sqrt(8)
    (4, 0): 4 (A), sqrt(32) (B), 2 (C) -> d1 + d2 = 2 + 4 = 6
    w_c: 3 object pixels of 25 -> 25 / (2 * 3); 22 gap pixels -> 25 / (2 * 22).
    """
    label = np.zeros((5, 5), dtype=np.int64)
    label[0, 0] = label[0, 4] = label[4, 2] = 1
    w = border_weight_map(label, 2, objects="foreground", w0=10, sigma=5)

    def border(s: float) -> float:
        return 10 * math.exp(-(s**2) / (2 * 5**2))

    gap, obj = 25 / 44, 25 / 6
    assert w[0, 2] == pytest.approx(gap + border(4), rel=1e-5)
    assert w[2, 2] == pytest.approx(gap + border(2 + math.sqrt(8)), rel=1e-5)
    assert w[4, 0] == pytest.approx(gap + border(6), rel=1e-5)
    assert w[0, 0] == pytest.approx(obj)  # inside an object: w_c only
    assert w.dtype == np.float32


def test_weight_map_needs_two_objects_and_honours_object_region() -> None:
    label = np.zeros((6, 6), dtype=np.int64)
    label[:, :2] = 1
    np.testing.assert_allclose(border_weight_map(label, 2), class_balance_weights(label, 2))
    # Membrane-style labels: the foreground (1) separates background objects (cells).
    membrane = np.zeros((5, 7), dtype=np.int64)
    membrane[:, 3] = 1
    assert object_labels(membrane, "background").max() == 2
    w = border_weight_map(membrane, 2, objects="background", w0=10, sigma=5)
    # On the membrane d1 = d2 = 1: w_c = 35 / (2 * 5) plus 10 exp(-4 / 50).
    assert w[2, 3] == pytest.approx(35 / 10 + 10 * math.exp(-4 / 50), rel=1e-5)


def test_weight_map_far_objects_are_cut_off_exactly_enough() -> None:
    """Objects beyond the cut-off distance contribute < 1e-3, as if computed in full."""
    label = np.zeros((8, 80), dtype=np.int64)
    label[:, 0] = label[:, 79] = 1  # 78 px apart
    w = border_weight_map(label, 2)
    np.testing.assert_allclose(w, class_balance_weights(label, 2), atol=1e-3)


def test_soft_dice_and_cross_entropy() -> None:
    target = torch.tensor([[[0, 1], [1, 1]]])
    perfect = (target.float() * 40 - 20).unsqueeze(1)  # N x 1 x H x W logits
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(1, 1, 2, 2)
    weight = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
    expected = float((pixel * weight).sum() / weight.sum())
    assert float(weighted_cross_entropy(logits, target, weight)) == pytest.approx(expected)
    multi = torch.randn(1, 3, 2, 2)
    assert float(weighted_cross_entropy(multi, target)) == pytest.approx(
        float(F.cross_entropy(multi, target))
    )


def test_segmentation_loss_adds_sides_and_image_term() -> None:
    logits, target = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    loss = SegmentationLoss(side_weight=0.5, image_weight=0.2)
    base = float(loss(UNetOutput(logits, None, ()), target))
    with_side = float(loss(UNetOutput(logits, None, (logits,)), target))
    assert with_side == pytest.approx(1.5 * base)
    scores, present = torch.zeros(2, 1), torch.ones(2, 1)
    with_image = float(loss(UNetOutput(logits, scores, ()), target, present=present))
    assert with_image == pytest.approx(base + 0.2 * math.log(2), rel=1e-5)
