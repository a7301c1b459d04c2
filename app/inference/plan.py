"""Where tiles go: aligned origins and keep ranges that partition the image (pure numpy).

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
by ``2 * margin`` pixels and each keeps only its part of the overlap, cut in
the middle (centre cropping). The deviation from whole-image inference is
measured by the tests and the benchmark, not assumed to be zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from app.inference.geometry import Geometry

DEFAULT_MARGIN = 96  # same-padding nets: measured exact on the test network (docs/performance.md)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


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


def _plan_valid_axis(length: int, geometry: Geometry, max_size: int, fixed: bool) -> list[AxisTile]:
    g, h, m = geometry, geometry.halo, geometry.size_multiple
    single = g.valid_size_at_least(length + 2 * h)
    if single <= max_size:  # fixed: the same tile, reading further into the reflection
        return [AxisTile(-h, max_size if fixed else single, 0, 0, length)]

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
    # Shrink the tile while the same number of tiles still covers the axis (not for a
    # fixed shape: one input shape for every image is what GPU providers need).
    while not fixed and (smaller := g.valid_size_at_most(size - 1)) is not None:
        candidate = origins_for(smaller)
        if candidate is None or len(candidate) > len(best):
            break
        size, best = smaller, candidate
    stops = [*best[1:], length]
    return [AxisTile(o - h, size, o, o, stop) for o, stop in zip(best, stops, strict=True)]


def _plan_same_axis(
    length: int, geometry: Geometry, max_size: int, margin: int, fixed: bool
) -> list[AxisTile]:
    g, c = geometry, margin
    padded = g.valid_size_at_least(length)  # the reference reflects up to this length
    if padded <= max_size:
        return [AxisTile(0, max_size if fixed else padded, 0, 0, length)]
    step = (max_size - 2 * c) // g.size_multiple * g.size_multiple
    if step < g.size_multiple:
        raise ValueError(
            f"tile size {max_size} leaves nothing between two margins of {c} px; "
            f"use a tile size >= {g.valid_size_at_least(2 * c + g.size_multiple)}"
        )
    starts = [0]
    while starts[-1] + max_size < padded:
        starts.append(min(starts[-1] + step, padded - max_size))
    # Cut each overlap in its middle: both neighbours keep >= margin px from their border.
    cuts = [(a + b + max_size) // 2 for a, b in itertools.pairwise(starts)]
    bounds = [0, *(min(cut, length) for cut in cuts), length]
    return [
        AxisTile(a, max_size, a, lo, hi)
        for a, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True)
        if hi > lo
    ]


def plan_axis(
    length: int,
    geometry: Geometry,
    tile_size: int,
    margin: int = DEFAULT_MARGIN,
    fixed: bool = False,
) -> list[AxisTile]:
    """The tiles along one axis of ``length`` pixels, input tiles at most ``tile_size``.

    margin: same-padding networks only -- pixels at each inner tile border that
    are discarded because they saw the tile's zero padding (a tiling choice).
    fixed: every tile is the largest accepted size <= ``tile_size``, whatever the
    image (smaller images read further into their reflection; the last tile is
    pulled back): one input shape for every image, which GPU providers need (a
    new shape costs a cuDNN algorithm search or a TensorRT engine). Default: the
    tile shrinks to the smallest size needing no more tiles (faster on a CPU).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if length < 1:
        raise ValueError(f"image side must be >= 1 px, got {length}")
    max_size = geometry.valid_size_at_most(tile_size)
    if max_size is None:
        raise ValueError(
            f"tile size {tile_size} is below the network's minimum input "
            f"{geometry.min_size}; use a tile size >= {geometry.min_size}"
        )
    if geometry.padding == "valid":
        return _plan_valid_axis(length, geometry, max_size, fixed)
    return _plan_same_axis(length, geometry, max_size, margin, fixed)


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
    height: int,
    width: int,
    geometry: Geometry,
    tile_size: int | tuple[int, int],
    margin: int = DEFAULT_MARGIN,
    fixed: bool = False,
) -> TilePlan:
    """Plan the tiles covering an ``height`` x ``width`` image.

    ``tile_size`` bounds the input tile (int or (h, w)); each axis uses the
    smallest accepted size that needs no more tiles than the bound does.
    """
    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else tile_size
    rows = tuple(plan_axis(height, geometry, th, margin, fixed))
    cols = tuple(plan_axis(width, geometry, tw, margin, fixed))
    return TilePlan(height, width, rows, cols, geometry.halo)
