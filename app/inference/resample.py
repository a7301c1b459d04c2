"""Resampling a large image a rectangle at a time, the same pixel for pixel whichever
rectangle it is read in: every output pixel is a fixed weighted sum of the source pixels
of its own footprint, summed in the same order (a library's resize of a rectangle is
not: its edges depend on the rectangle, so blocks would disagree at their seams).

Along each axis, ``factor`` source pixels per output pixel: the mean over the footprint
``[i * factor, (i + 1) * factor)`` (area) when shrinking, linear between the two nearest
source pixels (centres aligned) when enlarging; rows first, then columns. Outside the
image the edge pixel stands.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

Taps = tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]
BAND = 128  # output rows computed at once


def taps(start: int, stop: int, factor: float, length: int, linear: bool = False) -> Taps:
    """(first source index, weights: n x T) of output pixels ``start..stop-1`` of an axis of
    ``length`` source pixels; ``linear``: interpolate (enlarging, or a probability)."""
    index = np.arange(start, stop, dtype=np.float64)
    if linear or factor < 1:
        centre = np.clip((index + 0.5) * factor - 0.5, 0, length - 1)
        first = np.minimum(np.floor(centre).astype(np.intp), max(length - 2, 0))
        frac = centre - first
        return first, np.stack([1 - frac, frac], axis=1)
    count = math.ceil(factor) + 1
    low, high = index * factor, (index + 1) * factor
    first = np.floor(low).astype(np.intp)
    source = first[:, None] + np.arange(count)[None, :]
    overlap = np.minimum(high[:, None], source + 1) - np.maximum(low[:, None], source)
    weights = np.clip(overlap, 0, None) / factor
    return first, weights


def apply(window: npt.NDArray[Any], offset: int, axis_taps: Taps, axis: int) -> npt.NDArray[Any]:
    """The weighted sums along ``axis`` of ``window`` (whose index 0 is source index
    ``offset``), in float32, tap by tap."""
    first, weights = axis_taps
    last = window.shape[axis] - 1
    out = np.zeros((*window.shape[:axis], len(first), *window.shape[axis + 1 :]), np.float32)
    shape = [1] * window.ndim
    shape[axis] = len(first)
    for t in range(weights.shape[1]):
        where = np.clip(first + t - offset, 0, last)
        out += np.take(window, where, axis=axis) * weights[:, t].astype(np.float32).reshape(shape)
    return out


def _span(axis_taps: Taps, length: int) -> slice:
    first, weights = axis_taps
    return slice(max(int(first.min()), 0), min(int(first.max()) + weights.shape[1], length))


class Resampled:
    """``image`` (H x W x C, a lazy reader or an array) seen at ``shape`` (h, w): what the
    tiler reads instead of the image, a rectangle at a time."""

    def __init__(self, image: Any, shape: tuple[int, int], linear: bool = False) -> None:
        self.image, self.linear = image, linear
        height, width, channels = image.shape[:3]
        self.shape = (shape[0], shape[1], channels)
        self.dtype = np.dtype(image.dtype)
        self.factors = (height / shape[0], width / shape[1])

    def __getitem__(self, key: tuple[slice, slice]) -> npt.NDArray[Any]:
        rows, cols = key
        height, width = self.image.shape[:2]
        col_taps = taps(cols.start, cols.stop, self.factors[1], width, self.linear)
        down = _span(taps(rows.start, rows.stop, self.factors[0], height, self.linear), height)
        across = _span(col_taps, width)
        window = np.asarray(self.image[down, across])
        out = np.empty(
            (rows.stop - rows.start, cols.stop - cols.start, window.shape[2]), self.dtype
        )
        for top in range(rows.start, rows.stop, BAND):  # a few MB of floats at a time
            bottom = min(top + BAND, rows.stop)
            row_taps = taps(top, bottom, self.factors[0], height, self.linear)
            band = apply(apply(window, down.start, row_taps, 0), across.start, col_taps, 1)
            out[top - rows.start : bottom - rows.start] = self._cast(band)
        return out

    def _cast(self, sums: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        if np.issubdtype(self.dtype, np.integer):
            limits = np.iinfo(self.dtype)
            sums = np.clip(np.rint(sums), limits.min, limits.max)
        result: npt.NDArray[Any] = sums.astype(self.dtype)
        return result
