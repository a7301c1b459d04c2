"""Instance labels -> exact polygons on the pixel-corner grid, every object at once (numpy).

Pixel (x, y) is the square [x, x + 1] x [y, y + 1]; an object's polygons are the
boundary of the union of its pixels, so rasterising them (a pixel is inside
when its centre is) gives back exactly its pixels. Holes are kept; an object
whose pixels touch only at corners (4-connectivity) is several polygons.

How: app/codecs/boundaries.py finds every boundary segment and chains them into
rings; here the rings become polygons, an object's exterior ring and its holes (each
4-connected piece one polygon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from skimage import measure

from app.codecs import boundaries

Ring = npt.NDArray[np.int64]  # k x 2 (x, y), closed: the last point is the first
Polygon = tuple[Ring, ...]  # exterior ring first, then its holes


@dataclass(frozen=True)
class Outlines:
    """An id image's polygons by id, and each id's area (px; index = id): its rings' signed
    areas summed, which is its pixel count."""

    polygons: dict[int, tuple[Polygon, ...]]
    area: npt.NDArray[np.int64]


def outlines(labels: npt.NDArray[np.integer]) -> Outlines:
    """Each object id's polygons (exterior ring, then holes; rings closed; corner
    coordinates) and its area.

    Each 4-connected piece of an object is one polygon: traced on the pieces, a
    region that two pieces enclose by touching at corners is no one's hole. Tuples
    of numpy arrays, which Python's garbage collector need not follow (an image's
    tens of thousands of objects would otherwise cost it whole collections).
    """
    if not labels.any():
        return Outlines({}, np.zeros(1, dtype=np.int64))
    rings = _trace(labels, labels)
    area = np.bincount(rings.owner, weights=rings.area, minlength=int(labels.max()) + 1)
    exterior = np.bincount(rings.piece[rings.area > 0], minlength=int(rings.piece.max()) + 1)
    if (exterior[rings.piece] == 1).all():
        # Each object one piece (one exterior ring): traced on the pieces, it has the same
        # rings (the rule at a corner looks only at pixels beside the object's own), in order.
        shapes: dict[int, tuple[Polygon, ...]] = {
            owner: (polygon,) for owner, polygon in _by_piece(rings)
        }
        return Outlines(shapes, np.rint(area).astype(np.int64))
    pieces = measure.label(labels, background=0, connectivity=1)  # type: ignore[no-untyped-call]
    rings = _trace(pieces, labels)
    owner_of = dict(zip(rings.piece.tolist(), rings.owner.tolist(), strict=True))
    result: dict[int, list[Polygon]] = {}
    for piece, polygon in _by_piece(rings):
        result.setdefault(owner_of[piece], []).append(polygon)
    shapes = {owner: tuple(parts) for owner, parts in sorted(result.items())}
    return Outlines(shapes, np.rint(area).astype(np.int64))


def _by_piece(rings: _Rings) -> list[tuple[int, Polygon]]:
    """Each piece's polygon (its exterior ring, then its holes in ring order), by piece id."""
    order = np.lexsort((rings.area < 0, rings.piece))  # stable: holes keep their order
    piece, area = rings.piece[order], rings.area[order]
    bounds = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1], True])
    heads, ends = bounds[:-1], bounds[1:]
    second = np.minimum(heads + 1, len(area) - 1)
    if (area[heads] <= 0).any() or ((heads + 1 < ends) & (area[second] > 0)).any():
        raise RuntimeError("a 4-connected piece traced to other than one exterior ring")
    ordered = [rings.rings[i] for i in order.tolist()]
    starts = zip(piece[heads].tolist(), heads.tolist(), ends.tolist(), strict=True)
    return [(int(p), tuple(ordered[a:b])) for p, a, b in starts]


@dataclass(frozen=True)
class _Rings:
    """Every ring traced (closed, corner coordinates), with its piece, its label and signed area."""

    rings: list[Ring]
    piece: npt.NDArray[np.int64]
    owner: npt.NDArray[np.int64]
    area: npt.NDArray[np.float64]


def _trace(pieces: npt.NDArray[np.integer], labels: npt.NDArray[np.integer]) -> _Rings:
    """The rings of the pieces, each with its label in ``labels``, ring after ring in the order
    of their first segment."""
    s, order, starts = boundaries.rings(pieces)
    cring = np.repeat(np.arange(len(starts)), np.diff(starts, append=len(order)))
    cy, cx = np.divmod(s.start[order], s.row)
    area = np.bincount(cring, weights=_cross(cx, cy, starts), minlength=len(starts)) / 2
    # Every ring closed at once: its first point again after its last one.
    begin = starts + np.arange(len(starts))
    end = np.r_[begin[1:], len(order) + len(starts)]
    closed = np.empty((len(order) + len(starts), 2), dtype=np.int64)
    closed[np.arange(len(order)) + cring] = np.stack([cx, cy], axis=1)
    closed[end - 1] = closed[begin]
    # A ring's first segment is a +x one (boundaries.rings): the pixel below its start is its.
    piece = s.obj[order[starts]]
    owner = labels[cy[starts], cx[starts]].astype(np.int64)
    rings = [closed[a:b] for a, b in zip(begin.tolist(), end.tolist(), strict=True)]
    pinched = _pinched_rings(cx, cy, cring, pieces.shape[1])
    if not pinched:
        return _Rings(rings, piece, owner, area)
    # A ring that passes a vertex twice becomes its simple loops, in its place (rare).
    loops = {i: _simple_loops(closed[begin[i] : end[i] - 1].tolist()) for i in pinched}
    count = np.ones(len(rings), dtype=np.int64)
    for i, found in loops.items():
        count[i] = len(found)
    index = np.repeat(np.arange(len(rings)), count)
    area, spliced = area[index], list[Ring]()
    for i, ring in enumerate(rings):
        if i in loops:
            area[len(spliced) : len(spliced) + count[i]] = [a for _, a in loops[i]]
            spliced += [loop for loop, _ in loops[i]]
        else:
            spliced.append(ring)
    return _Rings(spliced, piece[index], owner[index], area)


def _pinched_rings(
    x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], ring: npt.NDArray[np.int64], width: int
) -> set[int]:
    """Rings that pass a vertex twice (pixels of one object touching diagonally there)."""
    key = ring * (int(y.max(initial=0)) + 2) * (width + 1) + y * (width + 1) + x
    key.sort()
    return {
        int(k)
        for k in np.unique(
            key[1:][key[1:] == key[:-1]] // ((int(y.max(initial=0)) + 2) * (width + 1))
        )
    }


def _simple_loops(points: list[list[int]]) -> list[tuple[Ring, float]]:
    """A ring that touches itself, cut at the touching vertices into simple loops (with
    their signed areas): an outer ring around a hole that meets it at a corner becomes
    the exterior and the hole, which OGC allows to touch at a point."""
    loops: list[list[list[int]]] = []
    stack: list[list[int]] = []
    seen: dict[tuple[int, int], int] = {}
    for point in [*points, points[0]]:
        key = (point[0], point[1])
        if key in seen:
            start = seen[key]
            loop = stack[start:]
            if len(loop) >= 3:
                loops.append(loop)
            for dropped in stack[start + 1 :]:
                seen.pop((dropped[0], dropped[1]), None)
            stack = stack[: start + 1]
        else:
            seen[key] = len(stack)
            stack.append(point)
    return [_closed(loop) for loop in loops]


def _closed(loop: list[list[int]]) -> tuple[Ring, float]:
    """A loop as a closed ring, with its signed area (shoelace)."""
    ring = np.asarray([*loop, loop[0]], dtype=np.int64)
    xs, ys = ring[:-1, 0], ring[:-1, 1]
    return ring, float((xs * np.roll(ys, -1) - np.roll(xs, -1) * ys).sum() / 2)


def _cross(
    x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], starts: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """x_i * y_{i+1} - x_{i+1} * y_i for each edge, the next point wrapping within its ring."""
    nxt = np.arange(1, len(x) + 1)
    ends = np.r_[starts[1:], len(x)]
    nxt[ends - 1] = starts
    return (x * y[nxt] - x[nxt] * y).astype(np.float64)
