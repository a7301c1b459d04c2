"""DICOM whole-slide images (VL Whole Slide Microscopy): a folder of a slide's instances,
or one instance, read a rectangle at a time through wsidicom, each pyramid level of the
file set a level here. The levels only: app/codecs/slides.py makes the Slide of them.

``pip install .[dicom-wsi]`` (wsidicom); without it such files are not recognised here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.codecs.errors import CorruptImageError
from app.codecs.magic import is_dicom

WSM = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
LOOKED_AT = 16  # files of a folder whose header is read before it is called no slide


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return files[:LOOKED_AT]


def _series(file: Path) -> str | None:
    """The Series Instance UID of a VL WSM instance, else None (not DICOM, another SOP class,
    unreadable)."""
    import pydicom

    with file.open("rb") as stream:
        if not is_dicom(stream.read(132)):
            return None
    try:
        header = pydicom.dcmread(
            file, stop_before_pixels=True, specific_tags=["SOPClassUID", "SeriesInstanceUID"]
        )
    except Exception:  # pydicom's view of a damaged header: any of its exceptions
        return None
    if str(header.get("SOPClassUID", "")) != WSM:
        return None
    return str(header.get("SeriesInstanceUID", ""))


def is_dicom_wsi(path: Path) -> bool:
    """Whether ``path`` is a VL Whole Slide Microscopy instance, or a folder of the
    instances of one slide (every file in it one, of one series; else the folder's files
    are inputs of their own)."""
    if importlib.util.find_spec("wsidicom") is None:
        return False
    series = {_series(file) for file in _files(path)}
    return len(series) == 1 and None not in series


class WsiLevel:
    """One pyramid level of an open slide as an H x W x C uint8 array that reads
    rectangles (C = 3 for RGB, 1 for gray)."""

    def __init__(self, wsi: Any, level: Any, channels: int) -> None:
        self.wsi, self.level = wsi, level.level  # the level's number: log2 of its scale
        self.shape = (level.size.height, level.size.width, channels)
        self.dtype = np.dtype(np.uint8)
        spacing = level.pixel_spacing  # mm per pixel: (width, height)
        self.pixel_size_um = (spacing.height * 1000, spacing.width * 1000) if spacing else None

    def __getitem__(self, key: tuple[slice, slice, slice]) -> npt.NDArray[np.uint8]:
        rows, cols, channels = key
        size = (cols.stop - cols.start, rows.stop - rows.start)
        region = np.asarray(
            self.wsi.read_region((cols.start, rows.start), self.level, size, as_array=True)
        )
        region = region if region.ndim == 3 else region[:, :, None]
        return region[:, :, channels]


def open_levels(path: Path) -> tuple[list[WsiLevel], Callable[[], None]]:
    """The slide's levels, level 0 first, and how to close it; CorruptImageError when
    wsidicom cannot open it."""
    from wsidicom import WsiDicom

    try:
        wsi = WsiDicom.open([path] if path.is_file() else sorted(path.iterdir()))
    except Exception as exc:  # wsidicom's view of a file set it cannot use
        raise CorruptImageError(f"{path.name}: not a readable DICOM WSI ({exc})") from exc
    try:
        corner = np.asarray(wsi.read_region((0, 0), wsi.levels[0].level, (1, 1), as_array=True))
        channels = 1 if corner.ndim == 2 or corner.shape[2] == 1 else 3
        return [WsiLevel(wsi, level, channels) for level in wsi.levels], wsi.close
    except Exception as exc:
        wsi.close()
        raise CorruptImageError(f"{path.name}: not a readable DICOM WSI ({exc})") from exc
