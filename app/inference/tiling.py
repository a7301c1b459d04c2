"""Overlap-tile prediction: where tiles go, how they are cut, how outputs are stitched.

Pure numpy and backend-agnostic: the network is any callable
``predict(batch: N x C x h x w float32) -> N x K x h' x w'``.

Valid-padding networks (the paper's): the result is *exactly* the reference of
DESIGN.md -- reflect-pad the whole image by ``halo`` (plus the least extra that
makes each side a valid size), run it whole, keep the top-left H x W -- without
ever materialising the padded image. Tiles are gathered straight from the
unpadded image through a reflection index map (numpy's ``mode="reflect"`` is
the periodic reflection, so a longer reflection starts with the same pixels),
and every tile origin sits on a multiple of ``size_multiple`` (2^depth) so that
each tile sees the pooling grid of the whole image.

Worked example, paper net (halo 92, sizes 16k + 12), a 1000 px axis, tiles of
at most 572: output tiles are 572 - 184 = 388 px and origins step by 384 (the
largest multiple of 16 <= 388): 0, 384, then the last is pulled back to
624 = ceil16(1000 - 388) so it overhangs the image by < 16 px. Three tiles are
needed, so the tile is shrunk to the smallest size that still needs only
three: 524 (output 340, origins 0, 336, 672). Tile i keeps [origin_i,
origin_i+1): the keep ranges partition the axis.

Same-padding networks see zero padding at every tile border, so tiles overlap
by ``2 * context`` pixels and each keeps only its part of the overlap, cut in
the middle (centre cropping). The deviation from whole-image inference is
measured by the tests and the benchmark, not assumed to be zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

PredictFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating]]
# prepare(raw_tile: h x w x C_in, dest: C x h x w float32) fills dest (normalised input).
PrepareFn = Callable[[np.ndarray, npt.NDArray[np.float32]], None]
ProgressFn = Callable[[int, int], None]


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Geometry:
    """How a network's output relates to its input, per axis (both axes alike).

    padding: ``"valid"`` (output = input - 2 * halo) or ``"same"`` (output = input).
    halo: pixels lost per side by a valid network (92 for the paper's 4 levels), 0 for same.
    size_multiple, size_offset, min_size: accepted input sizes per axis are
        ``size_multiple * k + size_offset >= min_size`` (16, 12, 188 for the paper's net).
    context: same-padding only -- pixels at each inner tile border that are
        discarded because they saw the tile's zero padding (default 96).
    """

    padding: Literal["valid", "same"]
    halo: int
    size_multiple: int
    size_offset: int
    min_size: int
    context: int = 96

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {self.size_multiple}")
        if not 0 <= self.size_offset < self.size_multiple:
            raise ValueError(
                f"size_offset must be in [0, size_multiple={self.size_multiple}), "
                f"got {self.size_offset}"
            )
        if self.padding == "same" and self.halo != 0:
            raise ValueError(f"a same-padding network has halo 0, got {self.halo}")
        if self.padding == "valid" and self.halo < 1:
            raise ValueError(f"a valid-padding network has halo >= 1, got {self.halo}")
        if self.min_size < 1 or self.min_size <= 2 * self.halo:
            raise ValueError(
                f"min_size must exceed 2 * halo = {2 * self.halo} (the output would be empty), "
                f"got {self.min_size}"
            )
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")

    def is_valid_size(self, size: int) -> bool:
        return size >= self.min_size and size % self.size_multiple == self.size_offset

    def valid_size_at_least(self, size: int) -> int:
        """Smallest accepted input size >= ``size``."""
        size = max(size, self.min_size)
        return size + (self.size_offset - size) % self.size_multiple

    def valid_size_at_most(self, size: int) -> int | None:
        """Largest accepted input size <= ``size``, or None when there is none."""
        best = size - (size - self.size_offset) % self.size_multiple
        return best if best >= self.min_size else None

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        """The accepted sizes just below and just above ``size`` (for error messages)."""
        return self.valid_size_at_most(size), self.valid_size_at_least(size)

    def output_size(self, input_size: int) -> int:
        return input_size - 2 * self.halo


def unet_geometry(depth: int, padding: Literal["valid", "same"], context: int = 96) -> Geometry:
    """The geometry of a U-Net with two 3x3 convolutions per level and ``depth`` 2x2 poolings.

    Valid: each level loses 4 px and every pooling must see an even size, so
    halo = 2 (3 * 2^depth - 2) and sizes are 2^depth k + (-4 mod 2^depth), the
    smallest one whose output is >= 1 px (depth 4, the paper's: halo 92, 16k + 12,
    min 188). Same: halo 0, sizes multiples of 2^depth.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    m = 2**depth
    if padding == "same":
        return Geometry("same", 0, m, 0, m, context)
    halo = 2 * (3 * m - 2)
    offset = -4 % m
    smallest = 2 * halo + (offset - 2 * halo) % m
    min_size = smallest if smallest > 2 * halo else smallest + m
    return Geometry("valid", halo, m, offset, min_size, context)


@dataclass(frozen=True)
class AxisTile:
    """One tile's extent along one axis, in image coordinates.

    The network reads input ``[start, start + size)`` (may reach outside the
    image: reflected there), produces output ``[start + halo, start + size - halo)``,
    and this tile contributes output ``[keep_start, keep_stop)`` to the result.
    The keep ranges of an axis partition ``[0, length)``.
    """

    start: int
    size: int
    out_start: int
    keep_start: int
    keep_stop: int


def _valid_origins(length: int, out_size: int, step: int, multiple: int) -> list[int]:
    origins = [0]
    last = _ceil_to(length - out_size, multiple)
    while origins[-1] + out_size < length:
        origins.append(min(origins[-1] + step, last))
    return origins


def _plan_valid_axis(length: int, geometry: Geometry, max_size: int) -> list[AxisTile]:
    g, h, m = geometry, geometry.halo, geometry.size_multiple
    single = g.valid_size_at_least(length + 2 * h)
    if single <= max_size:
        return [AxisTile(-h, single, 0, 0, length)]

    def origins_for(size: int) -> list[int] | None:
        out = size - 2 * h
        step = out // m * m
        return _valid_origins(length, out, step, m) if step >= m else None

    size = max_size
    best = origins_for(size)
    if best is None:
        raise ValueError(
            f"tile size {max_size} is too small for this network: its output must be at least "
            f"{m} px, use a tile size >= {g.valid_size_at_least(2 * h + m)}"
        )
    # Shrink the tile while the same number of tiles still covers the axis.
    while (smaller := g.valid_size_at_most(size - 1)) is not None:
        candidate = origins_for(smaller)
        if candidate is None or len(candidate) > len(best):
            break
        size, best = smaller, candidate
    stops = [*best[1:], length]
    return [AxisTile(o - h, size, o, o, stop) for o, stop in zip(best, stops, strict=True)]


def _plan_same_axis(length: int, geometry: Geometry, max_size: int) -> list[AxisTile]:
    g, c = geometry, geometry.context
    padded = g.valid_size_at_least(length)  # the reference reflects up to this length
    if padded <= max_size:
        return [AxisTile(0, padded, 0, 0, length)]
    step = (max_size - 2 * c) // g.size_multiple * g.size_multiple
    if step < g.size_multiple:
        raise ValueError(
            f"tile size {max_size} leaves nothing between two context margins of {c} px; "
            f"use a tile size >= {g.valid_size_at_least(2 * c + g.size_multiple)}"
        )
    starts = [0]
    while starts[-1] + max_size < padded:
        starts.append(min(starts[-1] + step, padded - max_size))
    # Cut each overlap in its middle: both neighbours keep >= context px from their border.
    cuts = [(a + b + max_size) // 2 for a, b in itertools.pairwise(starts)]
    bounds = [0, *(min(cut, length) for cut in cuts), length]
    return [
        AxisTile(a, max_size, a, lo, hi)
        for a, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)
        if hi > lo
    ]


def plan_axis(length: int, geometry: Geometry, tile_size: int) -> list[AxisTile]:
    """The tiles along one axis of ``length`` pixels, input tiles at most ``tile_size``."""
    if length < 1:
        raise ValueError(f"image side must be >= 1 px, got {length}")
    max_size = geometry.valid_size_at_most(tile_size)
    if max_size is None:
        raise ValueError(
            f"tile size {tile_size} is below the network's minimum input "
            f"{geometry.min_size}; use a tile size >= {geometry.min_size}"
        )
    if geometry.padding == "valid":
        return _plan_valid_axis(length, geometry, max_size)
    return _plan_same_axis(length, geometry, max_size)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of an H x W image go: the product of a row plan and a column plan."""

    height: int
    width: int
    rows: tuple[AxisTile, ...]
    cols: tuple[AxisTile, ...]
    halo: int

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Input tile size (h, w); every tile of a plan has the same size."""
        return self.rows[0].size, self.cols[0].size

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[tuple[AxisTile, AxisTile]]:
        return itertools.product(self.rows, self.cols)

    @property
    def computed_pixels(self) -> int:
        """Output pixels the network computes over all tiles (>= height * width)."""
        th, tw = self.tile_shape
        return len(self) * (th - 2 * self.halo) * (tw - 2 * self.halo)


def plan_tiles(
    height: int, width: int, geometry: Geometry, tile_size: int | tuple[int, int]
) -> TilePlan:
    """Plan the tiles covering an ``height`` x ``width`` image.

    ``tile_size`` bounds the input tile (int or (h, w)); each axis uses the
    smallest accepted size that needs no more tiles than the bound does.
    """
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    rows = tuple(plan_axis(height, geometry, th))
    cols = tuple(plan_axis(width, geometry, tw))
    return TilePlan(height, width, rows, cols, geometry.halo)


def reflect_indices(start: int, size: int, length: int) -> slice | npt.NDArray[np.intp]:
    """Indices of ``[start, start + size)`` in an axis of ``length``, reflected outside it.

    Same as ``numpy.pad(mode="reflect")``, however far the range reaches: a slice
    when the range lies inside the axis, an index array otherwise.
    """
    if start >= 0 and start + size <= length:
        return slice(start, start + size)
    idx = np.arange(start, start + size)
    if length == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx).astype(np.intp)


def extract_tile(image: np.ndarray, row: AxisTile, col: AxisTile) -> np.ndarray:
    """The raw input tile (h x w x C) of an H x W x C image, reflected past its borders."""
    r = reflect_indices(row.start, row.size, image.shape[0])
    c = reflect_indices(col.start, col.size, image.shape[1])
    if isinstance(r, slice):
        return image[r][:, c]
    if isinstance(c, slice):
        return image[:, c][r]
    return image[np.ix_(r, c)]


def default_prepare(raw: np.ndarray, dest: npt.NDArray[np.float32]) -> None:
    """h x w x C -> C x h x w float32, values unchanged."""
    np.copyto(dest, raw.transpose(2, 0, 1), casting="unsafe")


def _as_hwc(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image must be H x W or H x W x C, got shape {image.shape}")
    return image


def _batches(plan: TilePlan, batch_size: int) -> Iterator[list[tuple[AxisTile, AxisTile]]]:
    tiles = iter(plan)
    while batch := list(itertools.islice(tiles, batch_size)):
        yield batch


def predict_tiled(
    image: np.ndarray,
    predict: PredictFn,
    geometry: Geometry,
    *,
    channels: int,
    tile_size: int | tuple[int, int] = 572,
    batch_size: int = 4,
    prepare: PrepareFn = default_prepare,
    out: npt.NDArray[np.float32] | None = None,
    accumulate: bool = False,
    progress: ProgressFn | None = None,
) -> npt.NDArray[np.float32]:
    """Predict an H x W (x C_in) image tile by tile; returns K x H x W float32.

    channels: the network's input channels (``prepare`` maps C_in to them).
    out: an existing K x H x W array (any strides, e.g. a flipped view) to write
        into; with ``accumulate`` the tile outputs are added to it instead.
    progress: called as ``progress(tiles_done, tiles_total)`` after each batch.

    Memory: the image, ``out`` and one batch of tiles -- never a padded copy of
    the whole image, never anything per tile beyond the batch.
    """
    image = _as_hwc(image)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    height, width = image.shape[:2]
    plan = plan_tiles(height, width, geometry, tile_size)
    th, tw = plan.tile_shape
    oh, ow = geometry.output_size(th), geometry.output_size(tw)
    batch = np.empty((min(batch_size, len(plan)), channels, th, tw), dtype=np.float32)
    done = 0
    for tiles in _batches(plan, batch_size):
        for slot, (row, col) in enumerate(tiles):
            prepare(extract_tile(image, row, col), batch[slot])
        result = predict(batch[: len(tiles)])
        if result.ndim != 4 or result.shape[0] != len(tiles) or result.shape[2:] != (oh, ow):
            raise ValueError(
                f"the network returned {result.shape} for input {batch[: len(tiles)].shape}; "
                f"expected ({len(tiles)}, K, {oh}, {ow}) for {geometry}"
            )
        if out is None:
            out = np.zeros((result.shape[1], height, width), dtype=np.float32)
        _stitch(out, result, tiles, accumulate)
        done += len(tiles)
        if progress is not None:
            progress(done, len(plan))
    if out is None:  # pragma: no cover - a plan always has at least one tile
        raise RuntimeError("empty tile plan")
    return out


def _stitch(
    out: np.ndarray,
    result: np.ndarray,
    tiles: Sequence[tuple[AxisTile, AxisTile]],
    accumulate: bool,
) -> None:
    for tile_out, (row, col) in zip(result, tiles, strict=True):
        src = tile_out[
            :,
            row.keep_start - row.out_start : row.keep_stop - row.out_start,
            col.keep_start - col.out_start : col.keep_stop - col.out_start,
        ]
        dst = out[:, row.keep_start : row.keep_stop, col.keep_start : col.keep_stop]
        if accumulate:
            dst += src
        else:
            dst[...] = src


def reference_padding(length: int, geometry: Geometry) -> tuple[int, int]:
    """(before, after) padding of one axis in the whole-image reference of DESIGN.md."""
    before = geometry.halo
    padded = geometry.valid_size_at_least(length + 2 * before)
    return before, padded - length - before


def predict_whole(
    image: np.ndarray,
    predict: PredictFn,
    geometry: Geometry,
    *,
    channels: int,
    prepare: PrepareFn = default_prepare,
) -> npt.NDArray[np.float32]:
    """The reference: the whole image through the network in one piece (K x H x W).

    Valid: ``numpy.pad(img, ((halo, halo + eh), (halo, halo + ew)), mode="reflect")``,
    eh/ew the least extra that makes each side valid; same: reflect-pad the
    bottom/right up to a valid size. Then keep the top-left H x W. Memory grows
    with the padded image's activations: for tests and benchmarks, not serving.
    """
    image = _as_hwc(image)
    height, width = image.shape[:2]
    pad_h, pad_w = reference_padding(height, geometry), reference_padding(width, geometry)
    padded = np.pad(image, (pad_h, pad_w, (0, 0)), mode="reflect")
    batch = np.empty((1, channels, *padded.shape[:2]), dtype=np.float32)
    prepare(padded, batch[0])
    result = predict(batch)
    return np.ascontiguousarray(result[0, :, :height, :width], dtype=np.float32)
