"""A small picture of a large image (for finding its tissue): a level of the file's own
pyramid near the size asked when it has one, else every s-th pixel, read a chunk at a
time so that memory stays a few chunks whatever the image's size."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from app.inference.tiler import Region

SIDE = 2048  # px: the picture's longest side is about this
READ = 2048  # px: the side of the rectangles a strided read asks for (rounded to the stride)


def overview(image: Region, side: int = SIDE) -> tuple[npt.NDArray[Any], tuple[float, float]]:
    """(h x w x C picture, (rows, cols) of level 0 per picture pixel): the smallest level of
    the file's pyramid whose longest side is at least ``side`` (and at most 4x it), else a
    strided read of level 0."""
    height, width = image.shape[:2]
    levels = sorted(getattr(image, "lower", ()), key=lambda level: max(level.shape[:2]))
    for level in levels:
        h, w = level.shape[:2]
        if side <= max(h, w) <= 4 * side:
            picture = np.asarray(level[slice(0, h), slice(0, w)])
            return picture, (height / h, width / w)
    stride = max(1, -(-max(height, width) // side))
    step = stride * max(1, READ // stride)  # a multiple of the stride: the picks line up
    rows, cols = -(-height // stride), -(-width // stride)
    picture = np.empty((rows, cols, image.shape[2]), image.dtype)
    for top in range(0, height, step):
        for left in range(0, width, step):
            here = (slice(top, min(top + step, height)), slice(left, min(left + step, width)))
            part = np.asarray(image[here])[::stride, ::stride]
            r, c = top // stride, left // stride
            picture[r : r + part.shape[0], c : c + part.shape[1]] = part
    return picture, (float(stride), float(stride))
