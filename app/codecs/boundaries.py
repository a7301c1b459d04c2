"""The boundary of an id image as segments, chained into rings (numpy, scipy).

Every boundary edge between two pixels of different labels is an edge of
the label(s) on either side, directed so that the object lies on its left
(x right, y down; so exterior rings come out counter-clockwise in (x, y) and
holes clockwise, as RFC 7946 asks). Collinear edges of one object in a row are
one segment, whose end is a corner: the ring turns left there when the pixel
ahead on the object's side is not the object's (so at a corner where its pixels
touch diagonally only, the ring turns left, keeping the two pixels apart), and
right otherwise. Segments chain end-to-start into rings without a Python loop per
segment, in O(S) for S segments (the rings' corners): a table of the grid's vertices
gives each segment its successor, and one depth-first walk (scipy's, compiled) puts
every ring's segments in order.

Cost, 4096 x 4096 px with 21,000 cells (bench/objects.py, 2 cores): of the 0.37 s that
app/codecs/polygons.py takes for all their polygons, finding the segments (a few passes
over the pixels, horizontal and vertical lines in two threads) is 0.14 s, their
successors 0.07 s, the walk 0.03 s; the rest is putting the rings together there.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import depth_first_order

from app.inference.runs import transposed


@dataclass(frozen=True)
class Segments:
    """Every segment, grouped by direction: +x, -x (the horizontal ones), +y, -y;
    ``part[d]`` is where those of direction d begin and end. Directions: 0 = +x, 1 = +y,
    2 = -x, 3 = -y; a left turn is (d + 1) % 4."""

    obj: npt.NDArray[np.int64]
    d: npt.NDArray[np.int8]  # direction
    after: npt.NDArray[np.int8]  # the direction of the next segment in the ring
    start: npt.NDArray[np.int64]  # start and end points as vertex numbers, y * row + x
    end: npt.NDArray[np.int64]
    row: int  # vertices in a row of the grid: W + 1
    part: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class _Runs:
    """Runs of one direction: start and end point (along, across the lines), owner, turn."""

    owner: npt.NDArray[np.int64]
    line: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    straight: npt.NDArray[np.bool_]  # the owner's pixel ahead on its side: the ring turns right


def _lines(q: npt.NDArray[np.int32], first_increases: bool) -> tuple[_Runs, _Runs]:
    """The runs along the lines between rows l and l + 1 of ``q`` (the padded labels, or their
    transpose): those of the side of row l (going up the positions when ``first_increases``,
    else down), then those of row l + 1 (the other way). Padding keeps a run in its line."""
    flat, size = q.ravel(), q.shape[1]
    index = np.flatnonzero(q[:-1] != q[1:])  # edge l * size + position, position = coord + 1
    found = []
    for offset, increases in ((0, first_increases), (size, not first_increases)):
        owner = flat[index + offset]
        mine = owner > 0
        edges, owner = index[mine], owner[mine]
        cut = (np.diff(edges) != 1) | (np.diff(owner) != 0)
        first, last = edges[np.r_[True, cut]], edges[np.r_[cut, True]]
        ids = owner[np.r_[True, cut]].astype(np.int64)
        line, low = np.divmod(first, size)
        low, high = low - 1, last - line * size  # the run's coordinates along its line
        if increases:  # the pixel ahead on the owner's side: one on from the last edge
            straight = flat[last + 1 + offset] == ids
            found.append(_Runs(ids, line, low, high, straight))
        else:
            straight = flat[first - 1 + offset] == ids
            found.append(_Runs(ids, line, high, low, straight))
    return found[0], found[1]


def _segments(labels: npt.NDArray[np.integer]) -> Segments:
    """Every segment (collinear boundary edges of one object in a row), object on its left."""
    width = labels.shape[1]
    p = np.pad(labels.astype(np.int32, copy=False), 1)  # ids < 2^31: half the memory of int64
    # Horizontal lines y = l between padded rows l and l + 1: the pixels above own -x
    # segments (right to left), those below +x ones. Vertical lines x = l, between padded
    # columns l and l + 1: the left pixels own +y, the right -y. Both kinds at once, in two
    # threads: numpy lets go of the GIL for most of the work.
    with ThreadPoolExecutor(max_workers=1) as pool:
        vertical = pool.submit(lambda: _lines(transposed(p), first_increases=True))
        minus_x, plus_x = _lines(p, first_increases=False)
        plus_y, minus_y = vertical.result()
    ordered = [(plus_x, 0), (minus_x, 2), (plus_y, 1), (minus_y, 3)]
    x = np.concatenate([run.start if d % 2 == 0 else run.line for run, d in ordered])
    y = np.concatenate([run.line if d % 2 == 0 else run.start for run, d in ordered])
    end_x = np.concatenate([run.end if d % 2 == 0 else run.line for run, d in ordered])
    end_y = np.concatenate([run.line if d % 2 == 0 else run.end for run, d in ordered])
    bounds = np.cumsum([0] + [len(run.owner) for run, _ in ordered]).tolist()
    return Segments(
        obj=np.concatenate([run.owner for run, _ in ordered]),
        d=np.concatenate([np.full(len(run.owner), d, dtype=np.int8) for run, d in ordered]),
        # Right where the object goes on ahead, else left.
        after=np.concatenate(
            [np.where(run.straight, (d + 3) % 4, (d + 1) % 4).astype(np.int8) for run, d in ordered]
        ),
        start=y * (width + 1) + x,
        end=end_y * (width + 1) + end_x,
        row=width + 1,
        part={d: (bounds[i], bounds[i + 1]) for i, (_, d) in enumerate(ordered)},
    )


def _successors(s: Segments, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Index of the segment that follows each segment in its ring: the one of direction
    ``after`` that starts where it ends (one table of the vertices, reused per direction)."""
    n = len(s.obj)
    table = np.empty((shape[0] + 1) * (shape[1] + 1), dtype=np.int32 if n < 2**31 else np.int64)
    found = np.empty(n, dtype=np.int64)
    for d, (begin, stop) in s.part.items():
        table[s.start[begin:stop]] = np.arange(begin, stop)
        ending = np.flatnonzero(s.after == d)
        found[ending] = table[s.end[ending]]
    # Rings are cycles: each found segment must start where its predecessor ends, in the
    # right direction, and be the successor of just one (unwritten table cells hold junk).
    if (
        not ((found >= 0) & (found < n)).all()
        or not np.array_equal(s.start[found], s.end)
        or not np.array_equal(s.d[found], s.after)
        or not (np.bincount(found, minlength=n) == 1).all()
    ):
        raise RuntimeError("polygon tracing: the boundary segments do not close into rings")
    return found


def _ring_order(
    successor: npt.NDArray[np.int64], horizontal: int, first: int
) -> tuple[npt.NDArray[np.int64], ...]:
    """The segments ring after ring (rings: the cycles of ``successor``), each ring from its
    smallest index, rings in the order of it; and where each ring starts in that order.

    Segments 0..horizontal - 1 are the horizontal ones, 0..first - 1 the +x ones: rings
    alternate horizontal and vertical segments, and a ring's smallest index is a +x one.
    So one depth-first walk (scipy, compiled) goes over the horizontal segments, two steps
    of the ring at a time, with a chain of extra nodes R_0 -> R_1 -> ... beside them, R_i
    also leading to segment i: from R_0 the walk goes round the ring of segment 0, back to
    R_0, on to R_1, round segment 1's ring unless seen, and so on.
    """
    n = horizontal
    # Nodes 0..n-1: a horizontal segment, one edge, to the next; n + i: R_i -> i, R_{i+1}.
    indptr = np.concatenate([np.arange(n + 1), n + 2 * np.arange(1, first), [n + 2 * first - 1]])
    chain = np.stack([np.arange(first), np.arange(n + 1, n + first + 1)], axis=1).ravel()[:-1]
    indices = np.concatenate([successor[successor[:n]], chain])
    graph = csr_matrix(
        (np.ones(len(indices), dtype=bool), indices.astype(np.int32), indptr.astype(np.int32)),
        shape=(n + first, n + first),
    )
    walk = depth_first_order(graph, n, directed=True, return_predecessors=False)
    segment = walk < n
    starts = segment[1:] & ~segment[:-1]  # a segment right after an R: its ring's first
    across = walk[segment]
    order = np.stack([across, successor[across]], axis=1).ravel()  # and the vertical ones
    return order, 2 * np.flatnonzero(starts[segment[1:]])


def rings(
    labels: npt.NDArray[np.integer],
) -> tuple[Segments, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every segment of the boundary of the ids > 0, and their order ring after ring (each
    ring from its smallest segment index, rings in the order of it) with where each ring
    starts in it."""
    s = _segments(labels)
    order, starts = _ring_order(_successors(s, labels.shape), s.part[2][1], s.part[0][1])
    return s, order, starts
