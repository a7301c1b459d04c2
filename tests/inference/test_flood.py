"""The compiled flood (app/inference/flood.py) is scikit-image's watershed flood: equal to it
pixel for pixel wherever scikit-image's own order is defined (no two seed pixels of one
level), and known answers for ties and for floods that run downhill."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage.segmentation import watershed

from app.inference.flood import flood
from app.inference.objects import FOUR


def skimage_flood(levels: npt.NDArray[np.uint8], seeds: npt.NDArray[np.integer]) -> np.ndarray:
    """The flood as it was before the compiled one: scikit-image's watershed from each
    seed's rim, over the pixels that are no seed."""
    free = seeds == 0
    rim = ndimage.binary_dilation(free, structure=FOUR) & ~free
    region = free | rim
    flooded = watershed(levels, markers=np.where(rim, seeds, 0), connectivity=1, mask=region)
    flooded[~region] = seeds[~region]
    return np.asarray(flooded)


@st.composite
def floods(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(levels, seeds) whose rim pixels all have different levels."""
    shape = (draw(st.integers(1, 14)), draw(st.integers(1, 14)))
    levels = draw(arrays(np.uint8, shape))
    seeds = draw(arrays(np.int32, shape, elements=st.integers(0, 4)))
    seeds[draw(arrays(np.bool_, shape))] = 0  # more free pixels
    free = seeds == 0
    rim = ndimage.binary_dilation(free, structure=FOUR) & ~free
    permutation = draw(st.permutations(range(256)))
    levels[rim] = np.asarray(permutation[: int(rim.sum())], dtype=np.uint8)
    return levels, seeds


@settings(max_examples=300, deadline=None)
@given(floods())
def test_it_equals_scikit_images_flood_where_that_has_one_order(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    levels, seeds = case
    np.testing.assert_array_equal(flood(levels, seeds), skimage_flood(levels, seeds))


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.uint8, (9, 11), elements=st.integers(0, 3)),
    arrays(np.int32, (9, 11), elements=st.integers(0, 3)),
)
def test_every_pixel_a_seed_reaches_is_labelled_and_the_seeds_stay(
    levels: np.ndarray, seeds: np.ndarray
) -> None:
    """With ties everywhere: seeds keep their labels, and each free pixel that a seed can
    reach takes the label of a seed its own 4-connected free area touches."""
    result = flood(levels, seeds)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result[seeds > 0], seeds[seeds > 0])
    areas, count = ndimage.label(seeds == 0, structure=FOUR)
    for area in range(1, count + 1):
        inside = areas == area
        touching = set(np.unique(seeds[ndimage.binary_dilation(inside, FOUR) & ~inside]))
        touching.discard(0)
        assert set(np.unique(result[inside])) <= (touching or {0})
        assert (result[inside] > 0).all() == bool(touching)


@pytest.mark.parametrize(
    ("levels", "seeds", "expected"),
    [
        # a tie: the seed first in raster order reaches the pixel between them first
        ([0, 0, 0], [1, 0, 2], [1, 1, 2]),
        ([0, 0, 0], [2, 0, 1], [2, 2, 1]),
        # the lowest level first: seed 2 sits lower and floods the plateau first
        ([9, 5, 5, 5, 0], [1, 0, 0, 0, 2], [1, 2, 2, 2, 2]),
        # over a ridge and down: at 7, seed 1 floods the basin behind the ridge, up to
        # the pixel seed 2 had queued (a pixel is labelled when it is queued)
        ([0, 7, 1, 1, 8, 0], [1, 0, 0, 0, 0, 2], [1, 1, 1, 1, 2, 2]),
        # no seed: nothing is labelled
        ([3, 2, 1], [0, 0, 0], [0, 0, 0]),
    ],
)
def test_known_floods(levels: list[int], seeds: list[int], expected: list[int]) -> None:
    result = flood(np.asarray([levels], np.uint8), np.asarray([seeds], np.int64))
    np.testing.assert_array_equal(result, [expected])
    np.testing.assert_array_equal(
        skimage_flood(np.asarray([levels], np.uint8), np.asarray([seeds], np.int32)), [expected]
    )


def test_a_pixel_downhill_waits_at_the_level_it_was_reached_by() -> None:
    """Seed 1 reaches the basin at 1 (bottom middle) over 152 and queues it at 152, after
    seed 2's pixel already queued at 152: seed 2 takes the bottom-right corner first."""
    levels = np.asarray([[214, 83, 27], [159, 199, 152], [152, 1, 124]], np.uint8)
    seeds = np.asarray([[1, 0, 2], [0, 0, 0], [1, 0, 0]], np.int32)
    expected = [[1, 2, 2], [1, 2, 2], [1, 1, 2]]
    np.testing.assert_array_equal(flood(levels, seeds), expected)
    np.testing.assert_array_equal(skimage_flood(levels, seeds), expected)


def test_an_empty_image_floods_to_an_empty_image() -> None:
    assert flood(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.int32)).shape == (0, 5)
