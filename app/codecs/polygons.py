"""Instance labels -> exact polygons on the pixel-corner grid, every object at once (numpy).

Pixel (x, y) is the square [x, x + 1] x [y, y + 1]; an object's polygons are the
boundary of the union of its pixels, so rasterising them (a pixel is inside
when its centre is) gives back exactly its pixels. Holes are kept; an object
whose pixels touch only at corners (4-connectivity) is several polygons.

How: every boundary edge between two pixels of different labels is an edge of
the label(s) on either side, directed so that the object lies on its left
(x right, y down; so exterior rings come out counter-clockwise in (x, y) and
holes clockwise, as RFC 7946 asks). Collinear edges of one object in a row are
one segment, whose end is a corner: the ring turns left there when the pixel
ahead on the object's side is not the object's (so at a corner where its pixels
touch diagonally only, the ring turns left, keeping the two pixels apart), and
right otherwise. Segments chain end-to-start into rings without a Python loop per
segment: pointer jumping finds each ring's first segment and every segment's place
in it (O(S log S) array operations for S segments, the rings' corners).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from skimage import measure

Ring = npt.NDArray[np.int64]  # k x 2 (x, y), closed: the last point is the first
Polygon = list[Ring]  # exterior ring first, then its holes

# Directions: 0 = +x, 1 = +y, 2 = -x, 3 = -y; a left turn is (d + 1) % 4. The pixel ahead on
# a segment's left (the object's side) at its end vertex v is at v + _AHEAD_LEFT[d].
_AHEAD_LEFT = np.array([[0, 0], [-1, 0], [-1, -1], [0, -1]], dtype=np.int64)


@dataclass(frozen=True)
class _Segments:
    obj: npt.NDArray[np.int64]
    x: npt.NDArray[np.int64]  # start point
    y: npt.NDArray[np.int64]
    d: npt.NDArray[np.int64]  # direction
    end_x: npt.NDArray[np.int64]
    end_y: npt.NDArray[np.int64]


def _line_runs(near: npt.NDArray[np.int32], far: npt.NDArray[np.int32]) -> tuple[Any, ...]:
    """The runs along axis 1 of the edges between ``near`` and ``far`` pixels (lines x
    positions) that ``near`` owns (near != far, near > 0), one owner per run: each run's
    line, first and last position and owner."""
    exists = (near != far) & (near > 0)
    index = np.flatnonzero(exists)
    line, position = np.divmod(index, exists.shape[1])
    owner = near[line, position].astype(np.int64)
    goes_on = (index[1:] == index[:-1] + 1) & (owner[1:] == owner[:-1]) & (position[1:] != 0)
    first, last = np.r_[True, ~goes_on], np.r_[~goes_on, True]
    return line[first], position[first], position[last], owner[first]


def _segments(labels: npt.NDArray[np.integer]) -> _Segments:
    """Every segment (collinear boundary edges of one object in a row), object on its left."""
    p = np.pad(labels.astype(np.int32, copy=False), 1)  # ids < 2^31: half the memory of int64
    parts = []
    # Horizontal lines y = r (r = 0..H): above = row r - 1, below = row r; runs along x.
    above, below = p[:-1, 1:-1], p[1:, 1:-1]
    r, c0, c1, owner = _line_runs(below, above)  # +x, from (c0, r) to (c1 + 1, r)
    parts.append((owner, c0, r, 0, c1 + 1, r))
    r, c0, c1, owner = _line_runs(above, below)  # -x, from (c1 + 1, r) to (c0, r)
    parts.append((owner, c1 + 1, r, 2, c0, r))
    # Vertical lines x = c (c = 0..W): left = column c - 1, right = column c; runs along y.
    q = np.ascontiguousarray(p.T)
    left, right = q[:-1, 1:-1], q[1:, 1:-1]
    c, r0, r1, owner = _line_runs(left, right)  # +y, from (c, r0) to (c, r1 + 1)
    parts.append((owner, c, r0, 1, c, r1 + 1))
    c, r0, r1, owner = _line_runs(right, left)  # -y, from (c, r1 + 1) to (c, r0)
    parts.append((owner, c, r1 + 1, 3, c, r0))
    obj, x, y, d, end_x, end_y = (
        np.concatenate([np.broadcast_to(part[i], part[0].shape) for part in parts]).astype(np.int64)
        for i in range(6)
    )
    return _Segments(obj, x, y, d, end_x, end_y)


def _successors(s: _Segments, labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Index of the segment that follows each segment in its ring."""
    height, width = labels.shape
    ahead_x, ahead_y = s.end_x + _AHEAD_LEFT[s.d, 0], s.end_y + _AHEAD_LEFT[s.d, 1]
    inside = (ahead_x >= 0) & (ahead_x < width) & (ahead_y >= 0) & (ahead_y < height)
    ahead = np.zeros(len(s.obj), dtype=np.int64)
    ahead[inside] = labels[ahead_y[inside], ahead_x[inside]]
    turn = np.where(ahead == s.obj, 3, 1)  # the object goes on ahead: right; else left
    key = (s.y * (width + 1) + s.x) * 4 + s.d
    next_key = (s.end_y * (width + 1) + s.end_x) * 4 + (s.d + turn) % 4
    # Each segment is the successor of exactly one (rings are cycles): the k-th smallest key
    # is the k-th smallest next key, so two sorts pair them (no search).
    by_key, by_next = np.argsort(key, kind="stable"), np.argsort(next_key, kind="stable")
    if not np.array_equal(key[by_key], next_key[by_next]):
        raise RuntimeError("polygon tracing: the boundary segments do not close into rings")
    found = np.empty_like(by_key)
    found[by_next] = by_key
    return found


def _ring_order(successor: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """(ring id, position in the ring) of every segment: rings are the cycles of ``successor``."""
    n = len(successor)
    graph = csr_matrix((np.ones(n, dtype=bool), (np.arange(n), successor)), shape=(n, n))
    _, ring = connected_components(graph, directed=True, connection="weak")
    first = np.full(int(ring.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, ring, np.arange(n))  # a ring starts at its smallest segment index
    last = successor == first[ring]  # the segment before the ring's first one
    dist = np.where(last, 0, 1)
    jump = np.where(last, np.arange(n), successor)
    # List ranking, distance to the last segment: log2 of the longest ring rounds.
    for _ in range(int(np.bincount(ring).max() - 1).bit_length()):
        dist += dist[jump]
        jump = jump[jump]
    return ring.astype(np.int64), -dist


def polygons(labels: npt.NDArray[np.integer]) -> dict[int, list[Polygon]]:
    """Object id -> its polygons (exterior ring, then holes; rings closed), corner coordinates.

    Each 4-connected piece of an object is one polygon: traced on the pieces, a
    region that two pieces enclose by touching at corners is no one's hole.
    """
    if not labels.any():
        return {}
    traced = _trace(labels, labels)
    if all(sum(area > 0 for _, area in rings) == 1 for _, rings in traced.values()):
        # Each object one piece (one exterior ring): traced on the pieces, it has the same
        # rings (the rule at a corner looks only at pixels beside the object's own), in order.
        return {owner: [_one_polygon(rings)] for owner, (_, rings) in sorted(traced.items())}
    pieces = measure.label(labels, background=0, connectivity=1)  # type: ignore[no-untyped-call]
    result: dict[int, list[Polygon]] = {}
    for _, (owner, rings) in sorted(_trace(pieces, labels).items()):
        result.setdefault(owner, []).append(_one_polygon(rings))
    return result


def _trace(
    pieces: npt.NDArray[np.integer], labels: npt.NDArray[np.integer]
) -> dict[int, tuple[int, list[tuple[Ring, float]]]]:
    """Piece -> its label in ``labels`` and its rings (closed, corner coordinates) with their
    signed areas."""
    s = _segments(pieces)
    ring, position = _ring_order(_successors(s, pieces))
    # Rings one after another (in the order of their labels), each from its first segment.
    lengths = np.bincount(ring)
    dest = (np.cumsum(lengths) - lengths)[ring] + lengths[ring] - 1 + position
    order = np.empty_like(dest)
    order[dest] = np.arange(len(dest))
    cring, cx, cy = ring[order], s.x[order], s.y[order]
    starts = np.flatnonzero(np.r_[True, cring[1:] != cring[:-1]])
    area = np.bincount(cring, weights=_cross(cx, cy, starts), minlength=len(starts)) / 2
    pinched = _pinched_rings(cx, cy, cring, pieces.shape[1])
    bounds = np.r_[starts, len(cring)]
    # Every ring closed at once: its first point again after its last one.
    points = np.stack([cx, cy], axis=1)
    closed = np.insert(points, bounds[1:], points[starts], axis=0)
    begin, end = starts + np.arange(len(starts)), bounds[1:] + np.arange(1, len(starts) + 1)
    first = order[starts]  # each ring's first segment: the first pixel on its left is its own
    ahead = _AHEAD_LEFT[s.d[first]]
    owners = labels[s.y[first] + ahead[:, 1], s.x[first] + ahead[:, 0]].tolist()
    result: dict[int, tuple[int, list[tuple[Ring, float]]]] = {}
    rings = zip(s.obj[first].tolist(), owners, begin.tolist(), end.tolist(), strict=True)
    for index, (piece, owner, a, b) in enumerate(rings):
        mine = result.setdefault(piece, (owner, []))[1]
        if index in pinched:
            mine += _simple_loops(closed[a : b - 1].tolist())
        else:
            mine.append((closed[a:b], float(area[index])))
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


def _one_polygon(rings: list[tuple[Ring, float]]) -> Polygon:
    """A 4-connected piece: its exterior ring (positive area), then its holes."""
    shells = [ring for ring, area in rings if area > 0]
    holes = [ring for ring, area in rings if area < 0]
    if len(shells) != 1:
        raise RuntimeError(f"a 4-connected piece traced to {len(shells)} exterior rings")
    return [shells[0], *holes]
