"""Overlap-tile prediction: gather tiles (reflected at the border), batch, run, hand to a sink.

Pure numpy and backend-agnostic: the network is any callable
``predict(batch: N x C x h x w float32) -> N x K x h' x w'`` (RunFn: the ONNX
engine in the service, the torch model in training). Where tiles go is
app/inference/plan.py; where their outputs go, app/inference/sinks.py.

Tiles are gathered straight from the unpadded image through a reflection index
map identical to ``numpy.pad(mode="reflect")``, so no padded copy is made; the
result equals ``predict_whole`` -- the reference of DESIGN.md -- exactly for
valid networks (tests: max |dp| <= 1e-5, measured 0.0).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.inference.geometry import Geometry
from app.inference.plan import DEFAULT_MARGIN, AxisTile, TilePlan, plan_tiles
from app.inference.sinks import ArraySink, Sink

# The network: N x C x h x w float32 -> N x K x h' x w' (logits or probabilities).
RunFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating]]
# prepare(raw_tile: h x w x C_in, dest: C x h x w float32) fills dest (normalised input).
PrepareFn = Callable[[np.ndarray, npt.NDArray[np.float32]], None]
ProgressFn = Callable[[int, int], None]
# Some tiles of a plan, or all of them (a TilePlan iterates over its tiles, holding none).
Tiles = Sequence[tuple[AxisTile, AxisTile]] | TilePlan


class Region(Protocol):
    """An H x W x C image that hands out rectangles: a numpy array, or a lazy reader
    (app/codecs/slides.py) that reads nothing until a rectangle is asked for."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def __getitem__(self, key: tuple[slice, slice], /) -> npt.ArrayLike: ...


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


def _window(index: slice | npt.NDArray[np.intp]) -> tuple[slice, slice | npt.NDArray[np.intp]]:
    """(the range that holds ``index``, ``index`` relative to that range's start)."""
    if isinstance(index, slice):
        return index, slice(0, index.stop - index.start)
    low = int(index.min())
    return slice(low, int(index.max()) + 1), index - low


def extract_tile(image: Region, row: AxisTile, col: AxisTile) -> np.ndarray:
    """The raw input tile (h x w x C) of an H x W x C image, reflected past its borders.

    The image is read once, in the rectangle that holds every reflected index (a
    lazy region reader reads nothing else), and the tile gathered inside it.
    """
    rows, r = _window(reflect_indices(row.start, row.size, image.shape[0]))
    cols, c = _window(reflect_indices(col.start, col.size, image.shape[1]))
    window = np.asarray(image[rows, cols])
    if isinstance(r, slice):
        return window[r][:, c]
    if isinstance(c, slice):
        return window[:, c][r]
    return window[np.ix_(r, c)]


def default_prepare(raw: np.ndarray, dest: npt.NDArray[np.float32]) -> None:
    """h x w x C -> C x h x w float32, values unchanged."""
    np.copyto(dest, raw.transpose(2, 0, 1), casting="unsafe")


def _as_hwc(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image must be H x W or H x W x C, got shape {image.shape}")
    return image


def _batches(tiles: Tiles, batch_size: int) -> Iterator[list[tuple[AxisTile, AxisTile]]]:
    each = iter(tiles)
    while batch := list(itertools.islice(each, batch_size)):
        yield batch


def run_tiles(
    image: np.ndarray,
    predict: RunFn,
    geometry: Geometry,
    sink: Sink,
    *,
    channels: int,
    tile_size: int | tuple[int, int] = 572,
    batch_size: int = 4,
    prepare: PrepareFn = default_prepare,
    progress: ProgressFn | None = None,
    margin: int = DEFAULT_MARGIN,
    fixed_shape: bool = False,
) -> int:
    """Predict an H x W (x C_in) image tile by tile into ``sink``; the number of tiles run.

    fixed_shape: every ``predict`` call gets exactly batch_size x C x tile x tile
    (plan_tiles' fixed plan, a short last batch padded with zeros whose outputs
    are dropped): one shape for any image, for GPU providers.

    channels: the network's input channels (``prepare`` maps C_in to them).
    progress: called as ``progress(tiles_done, tiles_total)`` after each batch; it
        may raise to stop the work there (a client that went away).

    Memory: the image and one batch of tiles -- never a padded copy of the whole
    image, never anything per tile beyond the batch; the sink holds the result.
    """
    image = _as_hwc(image)
    plan = plan_tiles(image.shape[0], image.shape[1], geometry, tile_size, margin, fixed_shape)
    return run_plan(
        image,
        predict,
        geometry,
        sink,
        plan,
        plan,
        channels=channels,
        batch_size=batch_size,
        prepare=prepare,
        progress=progress,
        fixed_shape=fixed_shape,
    )


def run_plan(
    image: Region,
    predict: RunFn,
    geometry: Geometry,
    sink: Sink,
    plan: TilePlan,
    tiles: Tiles,
    *,
    channels: int,
    batch_size: int = 4,
    prepare: PrepareFn = default_prepare,
    progress: ProgressFn | None = None,
    fixed_shape: bool = False,
) -> int:
    """``run_tiles`` for some ``tiles`` of a ``plan`` of an H x W x C ``image`` (any Region).

    A tile's output depends on the tile alone, so running a plan's tiles in any
    groups (the blocks of a large image, Dask tasks) gives what running them all does.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    th, tw = plan.tile_shape
    oh, ow = geometry.output_size(th), geometry.output_size(tw)
    slots = batch_size if fixed_shape else min(batch_size, len(tiles))
    batch = np.zeros((slots, channels, th, tw), dtype=np.float32)
    done = 0
    for group in _batches(tiles, batch_size):
        for slot, (row, col) in enumerate(group):
            prepare(extract_tile(image, row, col), batch[slot])
        run = batch if fixed_shape else batch[: len(group)]
        result = predict(run)
        if result.ndim != 4 or result.shape[0] != len(run) or result.shape[2:] != (oh, ow):
            raise ValueError(
                f"the network returned {result.shape} for input {run.shape}; "
                f"expected ({len(run)}, K, {oh}, {ow}) for {geometry}"
            )
        _keep(result[: len(group)], group, sink)
        done += len(group)
        if progress is not None:
            progress(done, len(tiles))
    return done


def _keep(result: np.ndarray, tiles: list[tuple[AxisTile, AxisTile]], sink: Sink) -> None:
    """Each tile's output cropped to its keep ranges, handed to the sink."""
    for tile_out, (row, col) in zip(result, tiles, strict=True):
        kept = tile_out[
            :,
            row.keep_start - row.out_start : row.keep_stop - row.out_start,
            col.keep_start - col.out_start : col.keep_stop - col.out_start,
        ]
        sink.write(slice(row.keep_start, row.keep_stop), slice(col.keep_start, col.keep_stop), kept)


def predict_tiled(
    image: np.ndarray,
    predict: RunFn,
    geometry: Geometry,
    *,
    channels: int,
    tile_size: int | tuple[int, int] = 572,
    batch_size: int = 4,
    prepare: PrepareFn = default_prepare,
    margin: int = DEFAULT_MARGIN,
    fixed_shape: bool = False,
) -> npt.NDArray[np.float32]:
    """``run_tiles`` into a new K x H x W float32 array, returned."""
    height, width = _as_hwc(image).shape[:2]
    sink = ArraySink(height, width)
    run_tiles(
        image,
        predict,
        geometry,
        sink,
        channels=channels,
        tile_size=tile_size,
        batch_size=batch_size,
        prepare=prepare,
        margin=margin,
        fixed_shape=fixed_shape,
    )
    return sink.array


def reference_padding(length: int, geometry: Geometry) -> tuple[int, int]:
    """(before, after) padding of one axis in the whole-image reference of DESIGN.md."""
    before = geometry.halo
    padded = geometry.valid_size_at_least(length + 2 * before)
    return before, padded - length - before


def predict_whole(
    image: np.ndarray,
    predict: RunFn,
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
