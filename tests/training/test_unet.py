"""The network: the shape table, invalid sizes, every option, initialisation, tiling exactness."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from app.inference.tiler import predict_tiled, predict_whole
from training.config import UNetConfig
from training.evaluate import torch_runner
from training.unet import UNet, side_crops, skip_crops


def test_paper_crops() -> None:
    """Fig. 1 of the paper: skips 568 -> 392, 280 -> 200, 136 -> 104, 64 -> 56."""
    assert skip_crops(4, "valid") == [88, 40, 16, 4]
    assert side_crops(4, "valid") == [2, 6, 14]
    assert skip_crops(4, "same") == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("padding", "depth", "size", "expected"),
    [
        ("valid", 4, 572, 388),  # the paper
        ("valid", 4, 188, 4),  # the smallest valid input
        ("valid", 4, 204, 20),
        ("valid", 3, 92, 4),
        ("valid", 2, 44, 4),
        ("valid", 1, 18, 2),
        ("same", 4, 64, 64),
        ("same", 4, 96, 96),
        ("same", 2, 20, 20),
    ],
)
def test_shape_table(padding: str, depth: int, size: int, expected: int) -> None:
    config = UNetConfig(base_channels=2, depth=depth, padding=padding)  # type: ignore[arg-type]
    assert config.geometry().output_size(size) == expected
    with torch.no_grad():
        out = UNet(config).eval()(torch.zeros(1, 1, size, size + config.size_multiple))
    assert out.logits.shape == (1, 1, expected, expected + config.size_multiple)


def test_paper_geometry() -> None:
    c = UNetConfig()
    assert (c.halo, c.size_multiple, c.size_offset, c.min_size) == (92, 16, 12, 188)
    assert c.widths() == [64, 128, 256, 512, 1024]
    same = UNetConfig(padding="same")
    assert (same.halo, same.size_multiple, same.size_offset, same.min_size) == (0, 16, 0, 16)


@pytest.mark.parametrize(
    ("padding", "size", "message"),
    [
        ("valid", 189, "nearest valid sizes: 188 or 204"),
        ("valid", 572 + 1, "nearest valid sizes: 572 or 588"),
        ("valid", 100, "nearest valid sizes: 188"),
        ("same", 65, "nearest valid sizes: 64 or 80"),
    ],
)
def test_invalid_size_names_nearest(padding: str, size: int, message: str) -> None:
    model = UNet(UNetConfig(base_channels=2, padding=padding))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 1, size, 188 if padding == "valid" else 64))


OPTIONS = list(
    itertools.product(
        ["valid", "same"],  # padding
        [False, True],  # batch_norm
        [0.0, 0.5],  # dropout
        [False, True],  # classification_head
        [False, True],  # deep_supervision
        [2, 3],  # num_classes (sigmoid, softmax)
    )
)


@pytest.mark.parametrize(("padding", "bn", "dropout", "head", "ds", "classes"), OPTIONS)
def test_every_option_builds_runs_and_trains(
    padding: str, bn: bool, dropout: float, head: bool, ds: bool, classes: int
) -> None:
    config = UNetConfig(
        base_channels=2,
        depth=2,
        padding=padding,  # type: ignore[arg-type]
        batch_norm=bn,
        dropout=dropout,
        classification_head=head,
        deep_supervision=ds,
        num_classes=classes,
    )
    model = UNet(config)
    size = 48 if padding == "valid" else 16
    out = model(torch.randn(2, 1, size, size))
    k, side = (1 if classes == 2 else classes), size - 2 * config.halo
    assert out.logits.shape == (2, k, side, side)
    assert (out.image_scores is not None) == head
    if out.image_scores is not None:
        assert out.image_scores.shape == (2, classes - 1)
    assert len(out.sides) == (config.depth - 1 if ds else 0)
    assert all(s.shape == out.logits.shape for s in out.sides)
    loss = out.logits.sum() + sum(s.sum() for s in out.sides)
    if out.image_scores is not None:
        loss = loss + out.image_scores.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_he_normal_init() -> None:
    model = UNet(UNetConfig(base_channels=64, depth=1))
    conv = model.inc[2]  # the second 3x3 conv: 64 x 64 x 3 x 3 weights
    assert isinstance(conv, torch.nn.Conv2d)
    std = float(conv.weight.detach().std())
    assert std == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert conv.bias is not None
    assert float(conv.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_valid_net_tiles_exactly(deep_supervision: bool) -> None:
    """Overlap-tiling through app.inference equals the whole-image reference, also with
    the upsampled side outputs of deep supervision (their crops remove every border effect)."""
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4, depth=3, deep_supervision=deep_supervision)
    model = UNet(config).eval()
    image = np.random.default_rng(0).random((90, 130, 1)).astype(np.float32)
    run = torch_runner(model)
    geometry = config.geometry()
    tiled = predict_tiled(image, run, geometry, channels=1, tile_size=124, batch_size=3)
    whole = predict_whole(image, run, geometry, channels=1)
    # float32 sums run in a size-dependent order (oneDNN blocking): ~1e-5 of noise; a
    # tiler off by one pixel or a side output misaligned differs by O(1).
    assert np.abs(whole).max() > 0.1
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)
