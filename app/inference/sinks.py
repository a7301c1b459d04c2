"""Where tile outputs go: a sink takes each tile's kept output for its region of the image.

The tiler (app/inference/tiler.py) decides where tiles go and crops each output
to its keep range; a sink decides where that lands and how it combines with
what is there. Keep ranges partition the image, so every pixel is written by
exactly one tile per pass, and output chunks aligned with them have one writer.

- ``ArraySink``: a K x H x W float32 array in memory (any strides: a flipped
  view works), overwritten, or added to (``accumulate``).
- ``FlipMean``: test-time augmentation, the mean over flips in one array: each
  flip adds through a flipped view, ``finish`` divides.
- Anything with ``write(rows, cols, values)``: a chunked array on disk (zarr)
  takes the same writes; the tests prove it with one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Sink(Protocol):
    def write(self, rows: slice, cols: slice, values: npt.NDArray[np.float32]) -> None:
        """values: K x (rows) x (cols), a tile's kept output for image region [rows, cols]."""


class ArraySink:
    """Tile outputs into a K x H x W float32 array, made at the first write unless given.

    out: an existing K x H x W array (any strides, e.g. a flipped view).
    accumulate: add to what is there instead of overwriting it.
    """

    def __init__(
        self,
        height: int,
        width: int,
        out: npt.NDArray[np.float32] | None = None,
        *,
        accumulate: bool = False,
    ) -> None:
        if out is not None and out.shape[1:] != (height, width):
            raise ValueError(f"out must be K x {height} x {width}, got {out.shape}")
        self.height, self.width = height, width
        self.out, self.accumulate = out, accumulate

    def write(self, rows: slice, cols: slice, values: npt.NDArray[np.float32]) -> None:
        if self.out is None:
            self.out = np.zeros((values.shape[0], self.height, self.width), dtype=np.float32)
        target = self.out[:, rows, cols]
        if self.accumulate:
            target += values
        else:
            target[...] = values

    @property
    def array(self) -> npt.NDArray[np.float32]:
        if self.out is None:
            raise RuntimeError("nothing was written to this sink")
        return self.out


class FlipMean:
    """The mean of the predictions of flipped images (TTA), accumulated in ``out`` (K x H x W).

    For each flip (fy, fx) in ``flips`` (1 or -1 per axis) the tiler writes the
    prediction of ``image[::fy, ::fx]`` into ``view(fy, fx)``; ``finish`` then
    divides by the number of flips.
    """

    def __init__(self, out: npt.NDArray[np.float32], flips: Sequence[tuple[int, int]]) -> None:
        self.out, self.flips = out, tuple(flips)

    def view(self, fy: int, fx: int) -> ArraySink:
        height, width = self.out.shape[1:]
        return ArraySink(height, width, self.out[:, ::fy, ::fx], accumulate=True)

    def add(self, fy: int, fx: int, values: npt.NDArray[np.float32]) -> None:
        """A whole prediction of the flip (fy, fx), in that flip's orientation (a block's)."""
        self.out[:, ::fy, ::fx] += values

    def finish(self) -> npt.NDArray[np.float32]:
        self.out *= np.float32(1 / len(self.flips))
        return self.out


class BlockSink:
    """Tile outputs into the K x h x w float32 array of one block of the image.

    Writes are clipped to the block: a tile that also covers a neighbouring block
    gives this one only its own pixels.
    """

    def __init__(self, rows: slice, cols: slice, channels: int) -> None:
        self.rows, self.cols = rows, cols
        shape = (channels, rows.stop - rows.start, cols.stop - cols.start)
        self.array: npt.NDArray[np.float32] = np.zeros(shape, dtype=np.float32)

    def write(self, rows: slice, cols: slice, values: npt.NDArray[np.float32]) -> None:
        r0, r1 = max(rows.start, self.rows.start), min(rows.stop, self.rows.stop)
        c0, c1 = max(cols.start, self.cols.start), min(cols.stop, self.cols.stop)
        if r0 >= r1 or c0 >= c1:
            return
        R, C = self.rows.start, self.cols.start
        self.array[:, r0 - R : r1 - R, c0 - C : c1 - C] = values[
            :, r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start
        ]
