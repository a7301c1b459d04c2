"""A small picture of a large image (for finding its tissue): every s-th pixel of the
smallest level of the file's own pyramid that is at least the size asked, read a
rectangle at a time so that memory stays a few rectangles whatever the image's size."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from app.inference.tiler import Region

SIDE = 2048  # px: the picture's longest side is about this
READ = 2048  # px: the side of the rectangles a strided read asks for (rounded to the stride)


def overview(image: Region, side: int = SIDE) -> tuple[npt.NDArray[Any], tuple[float, float]]:
    """(h x w x C picture, (rows, cols) of level 0 per picture pixel): every s-th pixel of
    the smallest level of the file's pyramid (level 0 included) whose longest side is at
    least ``side``, s chosen so that the picture's longest side is ``side`` to 2 x ``side``;
    read a rectangle at a time."""
    height, width = image.shape[:2]
    levels = [image, *getattr(image, "lower", ())]
    large = [level for level in levels if max(level.shape[:2]) >= side] or [image]
    base = min(large, key=lambda level: max(level.shape[:2]))
    h, w = base.shape[:2]
    stride = max(1, max(h, w) // side)
    step = stride * max(1, READ // stride)  # a multiple of the stride: the picks line up
    picture = np.empty((-(-h // stride), -(-w // stride), base.shape[2]), base.dtype)
    for top in range(0, h, step):
        for left in range(0, w, step):
            here = (slice(top, min(top + step, h)), slice(left, min(left + step, w)))
            part = np.asarray(base[here])[::stride, ::stride]
            r, c = top // stride, left // stride
            picture[r : r + part.shape[0], c : c + part.shape[1]] = part
    return picture, (height / h * stride, width / w * stride)
