"""Blocks: a large image's output cut into rectangles that are predicted one at a time.

A block is the unit of work and of writing for images beyond memory: the
streamed path runs the blocks one after another, Dask runs them as tasks
(app/pipeline/dask.py), and each block is exactly the chunks of the output store
it writes -- one writer per chunk (DESIGN.md, "Data flow of a large image").

A block runs the tiles of the image's one plan whose keep range meets it, and
keeps only its own pixels. A tile's output depends on the tile alone, so the
result equals the in-memory prediction bit for bit, however the image is cut.
Block sides are whole multiples of the plan's tile step, so that block borders
fall on keep-range borders and almost no tile runs twice: for a valid network
only the last tile of an axis (pulled back to end at the image border) can
straddle two blocks. (The mirrored blocks of test-time augmentation do not fall on
the step: their border tiles run twice, about a quarter more tiles.) Worked
example, paper net, 764 px tiles: tiles step by 576 px, a 2048 px target gives
blocks of 4 x 576 = 2304 px.

Each block reads its input once: the rectangle that holds every (reflected)
pixel its tiles need -- the block plus the halo, about 2.5k x 2.5k px -- from a
lazy reader (app/codecs/slides.py) or an array.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.inference.plan import AxisTile, TilePlan
from app.inference.tiler import Region, reflect_indices

BLOCK_SIZE = 2048  # px, the target side of a block (and of an output chunk)


@dataclass(frozen=True)
class Block:
    """The output rectangle ``[rows, cols]`` of the image (slices of step 1)."""

    rows: slice
    cols: slice

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    @property
    def pixels(self) -> int:
        height, width = self.shape
        return height * width


def _side(axis: Sequence[AxisTile], length: int, target: int) -> int:
    if len(axis) == 1:
        return length
    step = axis[1].start - axis[0].start
    return min(length, max(1, round(target / step)) * step)


def _meets(axis: Sequence[AxisTile], part: slice) -> list[AxisTile]:
    return [t for t in axis if t.keep_start < part.stop and t.keep_stop > part.start]


def _reads(axis: Sequence[AxisTile], length: int) -> slice:
    """The range of pixels that the tiles of ``axis`` read (reflection included)."""
    low, high = length, 0
    for tile in axis:
        index = reflect_indices(tile.start, tile.size, length)
        if isinstance(index, slice):
            low, high = min(low, index.start), max(high, index.stop)
        else:
            low, high = min(low, int(index.min())), max(high, int(index.max()) + 1)
    return slice(low, high)


@dataclass(frozen=True)
class BlockGrid:
    """The blocks of one plan: a regular grid of ``chunks`` (rows, cols) px, row-major."""

    plan: TilePlan
    chunks: tuple[int, int]

    def _parts(self, length: int, side: int) -> list[slice]:
        return [slice(a, min(a + side, length)) for a in range(0, length, side)]

    def __iter__(self) -> Iterator[Block]:
        rows = self._parts(self.plan.height, self.chunks[0])
        cols = self._parts(self.plan.width, self.chunks[1])
        return (Block(r, c) for r, c in itertools.product(rows, cols))

    def __len__(self) -> int:
        return -(-self.plan.height // self.chunks[0]) * -(-self.plan.width // self.chunks[1])

    def index(self, block: Block) -> int:
        """``block``'s place in the grid's order (row-major)."""
        columns = -(-self.plan.width // self.chunks[1])
        row, col = int(block.rows.start) // self.chunks[0], int(block.cols.start) // self.chunks[1]
        return row * columns + col

    def tiles(self, block: Block) -> list[tuple[AxisTile, AxisTile]]:
        """The tiles whose keep range meets ``block``, row-major."""
        rows, cols = _meets(self.plan.rows, block.rows), _meets(self.plan.cols, block.cols)
        return list(itertools.product(rows, cols))

    def tile_count(
        self, flips: Sequence[tuple[int, int]] = ((1, 1),), blocks: Iterable[Block] | None = None
    ) -> int:
        """The tiles that predicting every block (or ``blocks``) runs, for each of ``flips``
        (mirrored blocks, as with test-time augmentation): a tile meeting two blocks counts
        twice."""
        height, width = self.plan.height, self.plan.width
        count = 0
        for block, (fy, fx) in itertools.product(self if blocks is None else blocks, flips):
            rows, cols = mirror(block.rows, height, fy), mirror(block.cols, width, fx)
            count += len(_meets(self.plan.rows, rows)) * len(_meets(self.plan.cols, cols))
        return count

    def reads(self, block: Block) -> Block:
        """The input rectangle that ``block``'s tiles read."""
        rows = _reads(_meets(self.plan.rows, block.rows), self.plan.height)
        cols = _reads(_meets(self.plan.cols, block.cols), self.plan.width)
        return Block(rows, cols)


def block_grid(plan: TilePlan, target: int = BLOCK_SIZE) -> BlockGrid:
    """Blocks of about ``target`` px a side, whole multiples of the plan's tile step."""
    if target < 1:
        raise ValueError(f"block size must be >= 1 px, got {target}")
    return BlockGrid(
        plan,
        (_side(plan.rows, plan.height, target), _side(plan.cols, plan.width, target)),
    )


def mirror(part: slice, length: int, flip: int) -> slice:
    """Where ``part`` of an axis of ``length`` lies once the axis is reversed (flip -1)."""
    return part if flip == 1 else slice(length - part.stop, length - part.start)


class Window:
    """The rectangle ``area`` of an image, read once, indexed in the image's coordinates.

    What the tiler reads a block's tiles from: every rectangle asked for must lie
    inside ``area`` (BlockGrid.reads makes sure of it).
    """

    def __init__(self, image: Region, area: Block) -> None:
        self.data: npt.NDArray[Any] = np.asarray(image[area.rows, area.cols])
        self.shape, self.dtype = image.shape, self.data.dtype
        self.origin = area.rows.start, area.cols.start

    def __getitem__(self, key: tuple[slice, slice]) -> npt.NDArray[Any]:
        (rows, cols), (r0, c0) = key, self.origin
        return self.data[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]


class Flipped:
    """An image mirrored along its rows (``fy = -1``) and/or columns (``fx = -1``), read
    lazily: ``image[::fy, ::fx]`` for any Region."""

    def __init__(self, image: Region, fy: int, fx: int) -> None:
        self.image, self.fy, self.fx = image, fy, fx
        self.shape, self.dtype = image.shape, image.dtype

    def block(self, block: Block) -> Block:
        """Where ``block`` of the image lies in the mirrored image (and back)."""
        height, width = self.shape[:2]
        return Block(mirror(block.rows, height, self.fy), mirror(block.cols, width, self.fx))

    def __getitem__(self, key: tuple[slice, slice]) -> npt.NDArray[Any]:
        mirror = self.block(Block(*key))
        return np.asarray(self.image[mirror.rows, mirror.cols])[:: self.fy, :: self.fx]
