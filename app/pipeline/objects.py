"""Objects of images beyond memory: the card's recipe block by block, merged across borders.

After the blocks' class maps are in the store (app/pipeline/large.py), objects are
found in passes over the same blocks, each pass a set of independent tasks
(here one after another, or on Dask through a ``Mapper``) and a small merge:

1. ``label_block``: each block's pieces on their own -- the 4-connected components
   of each class (``components``), or of the seeds, p(boundary) < seed_threshold
   (``watershed``) -- with provisional ids, into ``scratch/local``.
2. ``merge.merge``: pieces that touch across a block border (same class) are one
   object, as dask-image's ``ndmeasure.label`` does: the same partition as
   labelling the whole image at once.
3. ``watershed`` only -- ``flood_block``: each block is flooded from the seeds of
   the block plus a margin of MARGIN px (dask's ``map_overlap``) and the margin
   dropped; an object's class is its most frequent non-boundary class, counted
   over all blocks.
4. ``relabel_block``: the final ids, small objects dropped (``min_area``), into the image.

Components equal the in-memory objects exactly. A watershed is flooded in
windows, so a pixel whose flood in memory comes from further than the margin,
or a tie the flood breaks in another order, can differ: the tests measure it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from app.codecs.pyramid import LabelStore
from app.inference.blocks import Block, BlockGrid
from app.inference.card import Recipe
from app.inference.flood import flood
from app.inference.merge import border_pairs, merge, offsets
from app.inference.objects import FOUR, components, renumber, vote_classes

MARGIN = 256  # px of seeds around a block that its watershed sees


class Mapper(Protocol):
    """Runs ``task(*args)`` for each tuple of ``jobs``; the results in the jobs' order."""

    def __call__(self, task: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> Iterator[Any]: ...


def local_map(task: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> Iterator[Any]:
    return (task(*args) for args in jobs)


@dataclass(frozen=True)
class Found:
    """The objects of a large image: ids 1..count in the store, and each one's class."""

    count: int
    classes: npt.NDArray[np.int64]  # count + 1, index 0 unused


def label_block(path: str, block: Block, method: str, num_classes: int) -> tuple[int, Any, Any]:
    """Pass 1: (pieces, class of each, pixels of each) of one block, written to scratch/local."""
    store = LabelStore.open(Path(path))
    mask = np.asarray(store.classes[block.rows, block.cols])
    if method == "components":
        pieces = components(mask, num_classes)
        labels, classes, count = pieces.labels, pieces.classes, pieces.count
    else:
        seeds = np.asarray(store.scratch("seeds")[block.rows, block.cols])
        labels, count = ndimage.label(seeds, structure=FOUR)
        classes = np.zeros(count + 1, dtype=np.int64)
    store.scratch("local")[block.rows, block.cols] = labels
    return count, classes, np.bincount(labels.ravel(), minlength=count + 1)


def _neighbours(grid: BlockGrid) -> Iterator[tuple[slice, slice, slice, slice]]:
    """(rows, cols of a block's last line, rows, cols of the next block's first line)."""
    for block in grid:
        r, c = block.rows, block.cols
        if c.stop < grid.plan.width:  # the block to the right
            yield r, slice(c.stop - 1, c.stop), r, slice(c.stop, c.stop + 1)
        if r.stop < grid.plan.height:  # the block below
            yield slice(r.stop - 1, r.stop), c, slice(r.stop, r.stop + 1), c


def _provisional(
    store: LabelStore, grid: BlockGrid, starts: npt.NDArray[np.int64], rows: slice, cols: slice
) -> npt.NDArray[np.int64]:
    """Provisional ids (block offset + local id; 0 stays 0) of a rectangle of any blocks."""
    local = np.asarray(store.scratch("local")[rows, cols]).astype(np.int64)
    (ch, cw), columns = grid.chunks, -(-grid.plan.width // grid.chunks[1])
    shift = np.zeros_like(local)
    for i in range(rows.start // ch, (rows.stop - 1) // ch + 1):
        for j in range(cols.start // cw, (cols.stop - 1) // cw + 1):
            r0, c0 = max(i * ch - rows.start, 0), max(j * cw - cols.start, 0)
            shift[r0 : (i + 1) * ch - rows.start, c0 : (j + 1) * cw - cols.start] = starts[
                i * columns + j
            ]
    return np.where(local > 0, local + shift, 0)


def merge_pieces(
    store: LabelStore, grid: BlockGrid, counts: list[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pass 2: (block offsets, provisional id -> merged id)."""
    starts = offsets(counts)
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    for ra, ca, rb, cb in _neighbours(grid):
        ids_a = _provisional(store, grid, starts, ra, ca).ravel()
        ids_b = _provisional(store, grid, starts, rb, cb).ravel()
        classes_a = np.asarray(store.classes[ra, ca]).ravel()
        classes_b = np.asarray(store.classes[rb, cb]).ravel()
        if store.has_scratch("seeds"):  # seeds are one class, whatever the class map says
            classes_a, classes_b = np.zeros_like(classes_a), np.zeros_like(classes_b)
        pairs.append(border_pairs(ids_a, ids_b, classes_a, classes_b))
    return starts, merge(int(sum(counts)), np.concatenate(pairs))


def flood_block(
    path: str,
    grid: BlockGrid,
    block: Block,
    starts: npt.NDArray[np.int64],
    merged: npt.NDArray[np.int64],
    num_classes: int,
) -> tuple[Any, Any]:
    """Pass 3 (watershed): flood the block with its margin into scratch/flooded; the
    (ids, class counts) of the objects it holds."""
    store = LabelStore.open(Path(path))
    height, width = grid.plan.height, grid.plan.width
    rows = slice(max(0, block.rows.start - MARGIN), min(height, block.rows.stop + MARGIN))
    cols = slice(max(0, block.cols.start - MARGIN), min(width, block.cols.stop + MARGIN))
    seeds = merged[_provisional(store, grid, starts, rows, cols)]
    levels = np.asarray(store.scratch("levels")[rows, cols])
    flooded = flood(levels, seeds) if seeds.any() else seeds  # no seed: no object
    core = flooded[
        block.rows.start - rows.start : block.rows.stop - rows.start,
        block.cols.start - cols.start : block.cols.stop - cols.start,
    ].astype(np.uint32)
    store.scratch("flooded")[block.rows, block.cols] = core
    mask = np.asarray(store.classes[block.rows, block.cols])
    pairs, counts = np.unique(core.astype(np.int64) * num_classes + mask, return_counts=True)
    return pairs, counts


def relabel_block(
    path: str, block: Block, source: str, starts: int, final: npt.NDArray[np.int64]
) -> None:
    """Pass 4: the final ids of the block's pixels into the image."""
    store = LabelStore.open(Path(path))
    ids = np.asarray(store.scratch(source)[block.rows, block.cols]).astype(np.int64)
    ids = np.where(ids > 0, ids + starts, 0)
    store.labels[block.rows, block.cols] = final[ids].astype(np.uint32)


def find_large_objects(
    store: LabelStore,
    grid: BlockGrid,
    recipe: Recipe,
    num_classes: int,
    run: Mapper = local_map,
    progress: Callable[[int, int], None] | None = None,
    runs: tuple[bool, ...] | None = None,
) -> Found:
    """The objects of the class map in ``store``, their ids written into its image.
    runs: the blocks that were predicted, in the grid's order (None: all); the others
    are background and hold no object."""
    path, every = str(store.path), list(grid)
    runs = runs if runs is not None else (True,) * len(every)
    blocks = [block for block, ran in zip(every, runs, strict=True) if ran]
    steps = 3 if recipe.method == "components" else 4

    def tick(step: int) -> None:
        if progress is not None:
            progress(step, steps)

    labelled = iter(run(label_block, [(path, b, recipe.method, num_classes) for b in blocks]))
    none = (0, np.zeros(1, np.int64), np.zeros(1, np.int64))  # a skipped block's pieces
    found = [next(labelled) if ran else none for ran in runs]
    tick(1)
    counts = [int(n) for n, _, _ in found]
    starts, merged = merge_pieces(store, grid, counts)
    tick(2)
    total = int(merged.max()) if len(merged) else 0
    if recipe.method == "components":
        areas, classes = np.zeros(total + 1, np.int64), np.zeros(total + 1, np.int64)
        for (n, piece_classes, piece_areas), start in zip(found, starts, strict=True):
            ids = merged[start + np.arange(1, n + 1)]
            np.add.at(areas, ids, piece_areas[1:])
            classes[ids] = piece_classes[1:]
        source, shifts = "local", [int(s) for s, ran in zip(starts, runs, strict=True) if ran]
        final_of = merged
    else:
        floods = [(path, grid, b, starts, merged, num_classes) for b in blocks]
        flat = np.zeros((total + 1) * num_classes, dtype=np.int64)
        for pairs, pair_counts in run(flood_block, floods):
            np.add.at(flat, pairs, pair_counts)
        votes = flat.reshape(total + 1, num_classes)
        tick(3)
        areas, classes = votes.sum(axis=1), vote_classes(votes, recipe)
        source, shifts, final_of = "flooded", [0] * len(blocks), np.arange(total + 1)
    final = renumber(areas, recipe.min_area)
    mapping = final[final_of]
    jobs = [(path, b, source, s, mapping) for b, s in zip(blocks, shifts, strict=True)]
    list(run(relabel_block, jobs))
    tick(steps)
    kept = final > 0
    return Found(int(final.max()), np.concatenate([[0], classes[kept]]).astype(np.int64))
