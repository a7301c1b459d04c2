"""Augmentation: labels stay exact integers, image and label move together, the paper's field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _dot_pair(offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A 40 x 40 image with one bright pixel at (12, 17), its label drawn ``offset`` from it."""
    image, label = torch.zeros(1, 40, 40), torch.zeros(40, 40, dtype=torch.int64)
    image[0, 12, 17] = 1.0
    label[12 + offset[0], 17 + offset[1]] = 1
    return image, label


def _where(plane: torch.Tensor) -> tuple[int, int]:
    r, c = np.unravel_index(int(plane.argmax()), tuple(plane.shape))
    return int(r), int(c)


@pytest.mark.parametrize("offset", [(2, 1), (-1, 3), (0, -2)])
def test_flips_and_quarter_turns_keep_the_label_offset(offset: tuple[int, int]) -> None:
    """Whatever flips and turns a tile gets, its label stays ``offset`` from what it traces;
    without label_offset a vertical flip or a turn moves it elsewhere (the old blur)."""
    image, label = _dot_pair(offset)
    keep = Augment(elastic_p=0.0, intensity=0.0, label_offset=(float(offset[0]), float(offset[1])))
    plain = Augment(elastic_p=0.0, intensity=0.0)
    moved = 0
    for seed in range(40):
        img, lab, _ = keep(image, label, torch.ones(40, 40), np.random.default_rng(seed))
        (r, c), (lr, lc) = _where(img[0]), _where(lab.float())
        assert (lr - r, lc - c) == offset, seed
        assert float(img.max()) == pytest.approx(1.0, abs=1e-5)  # whole-pixel shift: exact
        img, lab, _ = plain(image, label, torch.ones(40, 40), np.random.default_rng(seed))
        (r, c), (lr, lc) = _where(img[0]), _where(lab.float())
        moved += (lr - r, lc - c) != offset
    assert moved > 20  # most of the 8 flip/turn combinations move an offset (6 or 7 of them)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_a_fractional_offset_survives_flips_turns_and_deformation(seed: int, p: float) -> None:
    """ISBI's offset (-0.6, -0.2) on a smooth field, measured after augmentation by
    `training offset`'s cross-correlation: still (-0.6, -0.2), deformed or not."""
    from scipy.ndimage import gaussian_filter
    from scipy.ndimage import shift as subpixel_shift

    from training.data import Sample
    from training.offset import label_offset

    offset = (-0.6, -0.2)
    f = gaussian_filter(np.random.default_rng(seed).normal(size=(160, 160)), 2.0, mode="wrap")
    traced = subpixel_shift(f, offset, order=3, mode="grid-wrap")  # what the label draws
    label = torch.from_numpy((traced > np.median(traced)).astype(np.int64))
    image = torch.from_numpy(f.astype(np.float32)).unsqueeze(0)
    augment = Augment(elastic_p=p, elastic_std=2.0, intensity=0.0, label_offset=offset)
    rng = np.random.default_rng(seed)
    img, lab, _ = augment(image, label, torch.ones(160, 160), rng)
    found = label_offset(Sample("t", img.permute(1, 2, 0).numpy(), lab.numpy()))
    np.testing.assert_allclose(found, offset, atol=0.15)


def test_the_offset_moves_only_the_image() -> None:
    """The same random draws with or without an offset: label and weight map come out
    identical (so runs without --label-offset resume as before); only the image moves."""
    image, label = _dot_pair((2, 1))
    weight = torch.rand(40, 40)
    for seed in range(10):
        kept = Augment(elastic_p=0.5, label_offset=(2.0, 1.0))(
            image, label, weight, np.random.default_rng(seed)
        )
        plain = Augment(elastic_p=0.5)(image, label, weight, np.random.default_rng(seed))
        assert torch.equal(kept[1], plain[1])
        assert torch.equal(kept[2], plain[2])
