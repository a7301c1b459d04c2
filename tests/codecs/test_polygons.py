"""Polygons of instance labels: exact on the pixel-corner grid, valid in shapely, holes kept."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import MultiPolygon, Polygon
from skimage import measure

from app.codecs.polygons import Polygon as Rings
from app.codecs.polygons import _trace, outlines


def rasterise(parts: list[list[list[list[int]]]], shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres the polygons contain (shapely), H x W bool."""
    geometry = MultiPolygon([Polygon(p[0], p[1:]) for p in parts])
    assert geometry.is_valid, shapely.is_valid_reason(geometry)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(shapely.contains_xy(geometry, xs + 0.5, ys + 0.5))


def polygons(labels: np.ndarray) -> dict[int, tuple[Rings, ...]]:
    return outlines(labels).polygons


def check(labels: np.ndarray) -> None:
    """Each object's polygons rasterise back to exactly its pixels; its area is their count."""
    traced = outlines(labels)
    result = traced.polygons
    ids = set(np.unique(labels[labels > 0]).tolist())
    assert set(result) == ids
    for i in ids:
        np.testing.assert_array_equal(rasterise(result[i], labels.shape), labels == i)
    pixels = np.bincount(labels.ravel())
    pixels[0] = 0  # the background is no object
    np.testing.assert_array_equal(traced.area, pixels)
    assert traced.area.dtype == np.int64


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.int32, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 3))
)
def test_random_labels_rasterise_back_exactly(labels: np.ndarray) -> None:
    check(labels)


@pytest.mark.parametrize(
    "rows",
    [
        ["1"],  # one pixel
        ["111", "101", "111"],  # a hole
        ["11111", "10001", "10101", "10001", "11111"],  # an island in a hole
        ["10", "01"],  # diagonal only: two pieces of one object
        ["110", "101", "011"],  # a ring closed at a corner: exterior + a hole touching it
        ["0110", "1001", "1001", "0110"],  # four pieces around a hole no one owns
        ["1111", "1111"],  # touching the border everywhere
    ],
)
def test_known_shapes(rows: list[str]) -> None:
    labels = np.array([[int(c) for c in row] for row in rows], dtype=np.int32)
    check(labels)


def test_a_hole_and_an_island() -> None:
    labels = np.array([[int(c) for c in r] for r in ["11111", "12221", "12121", "12221", "11111"]])
    result = polygons(labels)
    frame, centre = sorted(result[1], key=len, reverse=True)  # two pieces of object 1
    assert Polygon(frame[0], frame[1:]).area == 16  # the frame, with object 2's area as hole
    assert Polygon(centre[0]).area == 1
    (ring,) = result[2]  # object 2: a ring around object 1's centre pixel
    assert Polygon(ring[0], ring[1:]).area == 8


def test_exterior_rings_counter_clockwise_holes_clockwise() -> None:
    (polygon,) = polygons(np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]]))[1]
    assert shapely.LinearRing(polygon[0]).is_ccw
    assert not shapely.LinearRing(polygon[1]).is_ccw


def test_nothing_gives_nothing() -> None:
    assert polygons(np.zeros((3, 4), np.int32)) == {}


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.int32, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 3))
)
def test_one_piece_objects_trace_the_same_without_the_pieces(labels: np.ndarray) -> None:
    """polygons() skips labelling the pieces when every object is one piece: an object's rings
    must then be the very rings (same points, same order) that tracing the pieces gives, or a
    large image's GeoJSON (objects traced in their box) would differ from the in-memory one."""
    assume(labels.any())  # polygons() returns {} before tracing nothing
    pieces = measure.label(labels, background=0, connectivity=1)
    by_piece, by_label = _trace(pieces, labels), _trace(labels, labels)
    for owner in np.unique(labels[labels > 0]).tolist():
        if np.unique(pieces[labels == owner]).size > 1:
            continue  # several pieces: traced on the pieces only
        ours, theirs = by_label.piece == owner, by_piece.owner == owner
        assert ours.sum() == theirs.sum()
        for i, j in zip(np.flatnonzero(ours), np.flatnonzero(theirs), strict=True):
            np.testing.assert_array_equal(by_label.rings[i], by_piece.rings[j])
            assert by_label.area[i] == by_piece.area[j]
