"""Resampling a rectangle at a time: any rectangle is the same part of the whole image,
bit for bit, whatever the factor; the area mean when shrinking, linear when enlarging."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.resample import Resampled

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (97, 131, 3), dtype=np.uint8)


def whole(view: Resampled) -> np.ndarray:
    return view[slice(0, view.shape[0]), slice(0, view.shape[1])]


def test_halving_is_the_mean_of_each_two_by_two() -> None:
    image = IMAGE[:96, :130]
    half = whole(Resampled(image, (48, 65)))
    mean = image.reshape(48, 2, 65, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.array_equal(half, np.rint(mean).astype(np.uint8))


def test_enlarging_is_linear_between_centres() -> None:
    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint16)[None, :, None], (4, 1, 1))  # 4 x 20
    double = whole(Resampled(ramp, (8, 40)))[0, :, 0].astype(np.float64)
    centres = np.clip((np.arange(40) + 0.5) / 2 - 0.5, 0, 19)
    assert np.array_equal(double, np.rint(centres * 10))
    flat = whole(Resampled(np.full((5, 6, 1), 77, np.uint8), (13, 17)))
    assert flat.shape == (13, 17, 1)
    assert (flat == 77).all()


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 200),
    width=st.integers(1, 200),
    top=st.integers(0, 199),
    left=st.integers(0, 199),
    rows=st.integers(1, 80),
    cols=st.integers(1, 80),
)
def test_any_rectangle_is_that_part_of_the_whole(
    height: int, width: int, top: int, left: int, rows: int, cols: int
) -> None:
    view = Resampled(IMAGE, (height, width))
    top, left = min(top, height - 1), min(left, width - 1)
    bottom, right = min(top + rows, height), min(left + cols, width)
    part = view[slice(top, bottom), slice(left, right)]
    assert np.array_equal(part, whole(view)[top:bottom, left:right])
