"""Augmentation: labels stay exact integers, image and label move together, the paper's field."""

from __future__ import annotations

import numpy as np
import torch

from training.augment import Augment, elastic_displacement, warp


def _label(size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(1)
    return torch.from_numpy(rng.integers(0, 4, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1))


def test_elastic_keeps_labels_integer_and_in_the_label_set() -> None:
    label = _label()  # classes 0..3 in 8 x 8 blocks
    augment = Augment(flips=False, rot90=False, elastic_p=1.0, intensity=0.0)
    image = label.float().unsqueeze(0)
    for seed in range(5):
        _, out, weight = augment(image, label, torch.ones(64, 64), np.random.default_rng(seed))
        assert out.dtype == torch.int64
        assert set(out.unique().tolist()) <= set(label.unique().tolist())
        assert not torch.equal(out, label)  # it did deform
        assert torch.equal(weight, torch.ones(64, 64))  # nearest: no new values


def test_image_and_label_move_together() -> None:
    label = _label()
    image = label.float().unsqueeze(0)  # the image *is* the label
    for seed in range(8):
        rng = np.random.default_rng(seed)
        plain = Augment(elastic_p=0.0, intensity=0.0)
        img, lab, _ = plain(image, label, torch.ones(64, 64), rng)
        assert torch.equal(img[0].long(), lab)  # flips and rotations: exactly
        deformed = Augment(flips=False, rot90=False, elastic_p=1.0, intensity=0.0)
        img, lab, _ = deformed(image, label, torch.ones(64, 64), np.random.default_rng(seed))
        # bicubic image vs nearest label: they differ only along block edges
        assert float((img[0].round().long() == lab).float().mean()) > 0.9


def test_paper_displacement_field() -> None:
    """3 x 3 lattice with the corner points on the corner pixels, std 10 px, smooth."""
    corners = []
    for seed in range(300):
        d = elastic_displacement(100, 100, np.random.default_rng(seed), grid=3, std=10.0)
        assert d.shape == (2, 100, 100)
        corners.append(float(d[0, 0, 0]))
        assert float((d[:, 1:] - d[:, :-1]).abs().max()) < 3  # smooth: < 3 px per pixel
    assert 8.5 < float(np.std(corners)) < 11.5


def test_warp_with_zero_displacement_is_identity() -> None:
    image = torch.rand(2, 20, 30)
    out = warp(image, torch.zeros(2, 20, 30), "bicubic")
    torch.testing.assert_close(out, image, rtol=0, atol=1e-5)
