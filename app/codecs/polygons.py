"""Instance labels -> exact polygons on the pixel-corner grid, every object at once (numpy).

Pixel (x, y) is the square [x, x + 1] x [y, y + 1]; an object's polygons are the
boundary of the union of its pixels, so rasterising them (a pixel is inside
when its centre is) gives back exactly its pixels. Holes are kept; an object
whose pixels touch only at corners (4-connectivity) is several polygons.

How: every boundary edge between two pixels of different labels is an edge of
the label(s) on either side, directed so that the object lies on its left
(x right, y down; so exterior rings come out counter-clockwise in (x, y) and
holes clockwise, as RFC 7946 asks). Edges of one object chain end-to-start
into rings; at a corner where the object's pixels touch diagonally only, the
ring turns left, keeping the two pixels apart. Rings are ordered without a
Python loop per edge: pointer jumping finds each ring's first edge and every
edge's place in it (O(E log E) array operations for E edges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from skimage import measure

Ring = list[list[int]]  # [[x, y], ...], closed: the last point is the first
Polygon = list[Ring]  # exterior ring first, then its holes

# Directions: 0 = +x, 1 = +y, 2 = -x, 3 = -y; a left turn is (d + 1) % 4.
_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)


@dataclass(frozen=True)
class _Edges:
    obj: npt.NDArray[np.int64]
    x: npt.NDArray[np.int64]  # start point
    y: npt.NDArray[np.int64]
    d: npt.NDArray[np.int64]  # direction


def _edges(labels: npt.NDArray[np.integer]) -> _Edges:
    """Every directed boundary edge of every object (object on the left)."""
    p = np.pad(labels.astype(np.int32, copy=False), 1)  # ids < 2^31: half the memory of int64
    parts = []
    # Horizontal lines y = r (r = 0..H): above = row r - 1, below = row r.
    above, below = p[:-1, 1:-1], p[1:, 1:-1]
    r, c = np.nonzero(above != below)
    for owner, start_x, d in ((below[r, c], c, 0), (above[r, c], c + 1, 2)):
        keep = owner > 0
        parts.append((owner[keep], start_x[keep], r[keep], np.full(keep.sum(), d)))
    # Vertical lines x = c (c = 0..W): left = column c - 1, right = column c.
    left, right = p[1:-1, :-1], p[1:-1, 1:]
    r, c = np.nonzero(left != right)
    for owner, start_y, d in ((right[r, c], r + 1, 3), (left[r, c], r, 1)):
        keep = owner > 0
        parts.append((owner[keep], c[keep], start_y[keep], np.full(keep.sum(), d)))
    obj, x, y, direction = (np.concatenate([part[i] for part in parts]) for i in range(4))
    return _Edges(obj.astype(np.int64), x, y, direction.astype(np.int64))


def _successors(e: _Edges, width: int) -> npt.NDArray[np.int64]:
    """Index of the edge that follows each edge in its ring."""
    vertices = (e.y.max(initial=0) + 2) * (width + 1)
    start = e.obj * vertices + e.y * (width + 1) + e.x
    end_x, end_y = e.x + _STEP[e.d, 0], e.y + _STEP[e.d, 1]
    end = e.obj * vertices + end_y * (width + 1) + end_x
    order = np.lexsort((e.d, start))
    sorted_start = start[order]
    first = np.searchsorted(sorted_start, end, side="left")
    count = np.searchsorted(sorted_start, end, side="right") - first
    chosen: npt.NDArray[np.int64] = order[first]
    pinch = np.nonzero(count == 2)[0]  # two ways on: the left turn keeps pixels apart
    if pinch.size:
        candidates = order[np.stack([first[pinch], first[pinch] + 1])]
        left_turn = e.d[candidates] == (e.d[pinch] + 1) % 4
        chosen[pinch] = np.where(left_turn[0], candidates[0], candidates[1])
    return chosen


def _ring_order(successor: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """(ring id, position in the ring) of every edge: rings are the cycles of ``successor``."""
    n = len(successor)
    graph = csr_matrix((np.ones(n, dtype=bool), (np.arange(n), successor)), shape=(n, n))
    _, ring = connected_components(graph, directed=True, connection="weak")
    first = np.full(int(ring.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, ring, np.arange(n))  # a ring starts at its smallest edge index
    last = successor == first[ring]  # the edge before the ring's first one
    dist = np.where(last, 0, 1)
    jump = np.where(last, np.arange(n), successor)
    while not np.array_equal(jump, jump[jump]):  # list ranking: distance to the last edge
        dist = dist + dist[jump]
        jump = jump[jump]
    dist = dist + dist[jump]
    return ring.astype(np.int64), -dist


def polygons(labels: npt.NDArray[np.integer]) -> dict[int, list[Polygon]]:
    """Object id -> its polygons (exterior ring, then holes; rings closed), corner coordinates.

    Each 4-connected piece of an object is one polygon: traced on the pieces, a
    region that two pieces enclose by touching at corners is no one's hole.
    """
    if not labels.any():
        return {}
    pieces = measure.label(labels, background=0, connectivity=1)  # type: ignore[no-untyped-call]
    owner = np.zeros(int(pieces.max()) + 1, dtype=np.int64)
    owner[pieces.ravel()] = labels.ravel()
    traced = _trace(pieces)
    result: dict[int, list[Polygon]] = {}
    for piece, rings in sorted(traced.items()):
        result.setdefault(int(owner[piece]), []).append(_one_polygon(rings))
    return result


def _trace(labels: npt.NDArray[np.integer]) -> dict[int, list[tuple[Ring, float]]]:
    """Label -> its rings (closed, corner coordinates) with their signed areas."""
    e = _edges(labels)
    rep, position = _ring_order(_successors(e, labels.shape[1]))
    order = np.lexsort((position, rep))
    ring_of, x, y, d, obj = rep[order], e.x[order], e.y[order], e.d[order], e.obj[order]
    starts = np.flatnonzero(np.r_[True, ring_of[1:] != ring_of[:-1]])
    # Keep corners only: a vertex where the direction changes (or a ring's first).
    previous_d = np.empty_like(d)
    previous_d[1:] = d[:-1]
    previous_d[starts] = d[np.r_[starts[1:], len(d)] - 1]  # a ring's last edge
    corner = d != previous_d
    ring_index = np.cumsum(np.r_[True, ring_of[1:] != ring_of[:-1]]) - 1
    area = np.bincount(ring_index, weights=_cross(x, y, starts), minlength=len(starts)) / 2
    cx, cy, cring = x[corner], y[corner], ring_index[corner]
    pinched = _pinched_rings(cx, cy, cring, labels.shape[1])
    result: dict[int, list[tuple[Ring, float]]] = {}
    bounds = np.flatnonzero(np.r_[True, cring[1:] != cring[:-1], True]).tolist()
    coordinates = np.stack([cx, cy], axis=1).tolist()  # one conversion for every ring
    owners, areas, rings = obj[starts].tolist(), area.tolist(), cring[bounds[:-1]].tolist()
    for a, b, index in zip(bounds[:-1], bounds[1:], rings, strict=True):
        points = coordinates[a:b]
        loops = _simple_loops(points) if index in pinched else [(points, areas[index])]
        for loop, loop_area in loops:
            result.setdefault(owners[index], []).append(([*loop, loop[0]], loop_area))
    return result


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


def _simple_loops(points: list[list[int]]) -> list[tuple[list[list[int]], float]]:
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
    return [(loop, _shoelace(loop)) for loop in loops]


def _shoelace(loop: list[list[int]]) -> float:
    xs, ys = np.asarray([p[0] for p in loop]), np.asarray([p[1] for p in loop])
    return float((xs * np.roll(ys, -1) - np.roll(xs, -1) * ys).sum() / 2)


def _cross(
    x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], starts: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """x_i * y_{i+1} - x_{i+1} * y_i for each edge, the next point wrapping within its ring."""
    nxt = np.arange(1, len(x) + 1)
    ends = np.r_[starts[1:], len(x)]
    nxt[ends - 1] = starts
    return (x * y[nxt] - x[nxt] * y).astype(np.float64)


def _one_polygon(rings: list[tuple[Ring, float]]) -> Polygon:
    """A 4-connected piece: its exterior ring (positive area), then its holes."""
    shells = [ring for ring, area in rings if area > 0]
    holes = [ring for ring, area in rings if area < 0]
    if len(shells) != 1:
        raise RuntimeError(f"a 4-connected piece traced to {len(shells)} exterior rings")
    return [shells[0], *holes]
