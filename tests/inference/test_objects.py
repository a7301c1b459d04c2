"""Pixels -> objects: components, watershed of a boundary map, min_area; measurements."""

from __future__ import annotations

import numpy as np
import pytest

from app.inference.card import Recipe
from app.inference.objects import find_objects, measure


def cells(gap: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 60 boundary map (0.9 on membranes, 0.05 inside) of 6 cells, 2 rows x 3
    columns; with ``gap`` the wall between the first two cells has a one-pixel gap, where
    the network is unsure (0.4: below the 0.5 threshold, above the seeds' 0.2)."""
    p = np.full((40, 60), 0.05, dtype=np.float32)
    p[[0, 19, 20, 39], :] = 0.9
    p[:, [0, 19, 20, 39, 40, 59]] = 0.9
    if gap:
        p[10, 19:21] = 0.4
    probabilities = p[None]
    mask = (p >= 0.5).astype(np.uint8)
    return probabilities, mask


def test_watershed_keeps_cells_apart_across_a_gap_and_components_do_not() -> None:
    probabilities, mask = cells(gap=True)
    watershed = find_objects(
        probabilities, mask, 2, Recipe(method="watershed", boundary_class=1, seed_threshold=0.2)
    )
    assert watershed.count == 6
    assert (watershed.labels > 0).all()  # every pixel assigned
    assert set(watershed.classes[1:].tolist()) == {0}  # cells are the non-boundary class
    # Components of the mask's cell class (what a mask alone gives) merge two cells.
    components = find_objects(1 - probabilities, 1 - mask, 2, Recipe(method="components"))
    assert components.count == 5
    gapless = find_objects(
        *cells(gap=False), 2, Recipe(method="watershed", boundary_class=1, seed_threshold=0.2)
    )
    assert gapless.count == 6


def test_components_are_4_connected_per_class() -> None:
    mask = np.array([[1, 0, 2], [0, 1, 2], [2, 2, 0]], dtype=np.uint8)
    probabilities = np.stack([np.ones((3, 3)) * v for v in (0.2, 0.3, 0.5)]).astype(np.float32)
    objects = find_objects(probabilities, mask, 3, Recipe())
    assert objects.count == 4  # the two 1s touch diagonally only: two objects
    assert sorted(objects.classes[1:].tolist()) == [1, 1, 2, 2]


def test_min_area_drops_exactly_the_small_ones() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0, 0] = 1  # 1 px
    mask[2:4, 2:4] = 1  # 4 px
    mask[6:9, 6:9] = 1  # 9 px
    probabilities = mask[None].astype(np.float32)

    def areas(min_area: int) -> list[int]:
        found = find_objects(probabilities, mask, 2, Recipe(min_area=min_area))
        return sorted(np.bincount(found.labels.ravel())[1:].tolist())

    assert areas(0) == [1, 4, 9]
    assert areas(4) == [4, 9]
    assert areas(5) == [9]
    kept = find_objects(probabilities, mask, 2, Recipe(min_area=4))
    assert sorted(np.unique(kept.labels).tolist()) == [0, 1, 2]  # ids stay 1..N


def test_measurements() -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:3, 2:6] = 1
    probabilities = (mask * 0.8 + 0.1)[None].astype(np.float32)
    objects = find_objects(probabilities, mask, 2, Recipe())
    m = measure(objects, probabilities)
    assert m.area[1] == 8
    assert m.bbox[1].tolist() == [2, 1, 4, 2]
    assert m.centroid[1].tolist() == [4.0, 2.0]  # pixel-corner coordinates
    assert m.score[1] == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [{"method": "blobs"}, {"seed_threshold": 1.0}, {"min_area": -1}])
def test_bad_recipes_name_the_field(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Recipe(**bad)  # type: ignore[arg-type]
