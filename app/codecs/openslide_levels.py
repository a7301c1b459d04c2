"""Slides only OpenSlide reads (NDPI, MRXS, SCN, VMS, BIF), through ``openslide-python``
with the ``openslide-bin`` wheel: each level of the file an array that reads rectangles.
The levels only: app/codecs/slides.py makes the Slide of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.codecs.errors import CorruptImageError
from app.codecs.pixel_size import openslide_pixel_size_um


class OpenSlideLevel:
    """An OpenSlide level as an H x W x 3 (RGB) array that reads rectangles: where the
    scan has no data (alpha < 255), the slide's background colour shows, as in viewers."""

    def __init__(self, handle: Any, level: int = 0) -> None:
        self.handle, self.level = handle, level
        self.downsample = float(handle.level_downsamples[level])
        width, height = handle.level_dimensions[level]
        self.shape, self.dtype = (height, width, 3), np.dtype(np.uint8)
        colour = handle.properties.get("openslide.background-color") or "FFFFFF"
        self.background = np.array([int(colour[i : i + 2], 16) for i in (0, 2, 4)], np.float32)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> npt.NDArray[np.uint8]:
        rows, cols, channels = key
        size = (cols.stop - cols.start, rows.stop - rows.start)
        corner = (round(cols.start * self.downsample), round(rows.start * self.downsample))
        rgba = np.asarray(self.handle.read_region(corner, self.level, size))
        rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
        if alpha.min() < 255:  # OpenSlide's RGBA is not premultiplied
            weight = alpha.astype(np.float32) / 255
            mixed = rgb * weight + self.background * (1 - weight)
            rgb = np.rint(mixed).astype(np.uint8)
        return rgb[:, :, channels]


def is_openslide(path: Path) -> bool:
    """Whether OpenSlide (when installed) reads the file ``path``."""
    if importlib.util.find_spec("openslide") is None or not path.is_file():
        return False
    import openslide

    return openslide.OpenSlide.detect_format(str(path)) is not None


def openslide_levels(
    path: Path,
) -> tuple[list[OpenSlideLevel], Callable[[], None], tuple[float, float] | None]:
    """The file's levels, level 0 first; how to close it; level 0's pixel size (µm)."""
    import openslide

    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as exc:
        raise CorruptImageError(f"{path.name}: OpenSlide cannot read it ({exc})") from exc
    try:
        levels = [OpenSlideLevel(handle, k) for k in range(handle.level_count)]
    except (ValueError, KeyError, IndexError) as exc:  # a malformed property, say
        handle.close()
        raise CorruptImageError(f"{path.name}: OpenSlide's view of it is broken ({exc})") from exc
    return levels, handle.close, openslide_pixel_size_um(handle.properties)
