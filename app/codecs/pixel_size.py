"""The physical pixel size an image file states: (row, column) spacing in µm, or None.

In the order of trust for a TIFF: OME-XML's PhysicalSizeY/X (unit attributes, µm by
default), an Aperio SVS description's ``MPP``, ImageJ's ``unit=`` with the resolution
tags (pixels per unit), the resolution tags in pixels per centimetre. Never a resolution
in inches: that is a print size (72 or 300 dpi), written by every editor. For an
OME-Zarr, level 0's scale on axes with a unit; for OpenSlide, ``openslide.mpp-y/x``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# The units of OME-XML and of NGFF's axes (UDUNITS-2 names), and ImageJ's.
MICRONS = {"nm": 1e-3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
           "micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "centimeter": 1e4,
           "meter": 1e6, "angstrom": 1e-4, "picometer": 1e-6, "pm": 1e-6,
           "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}  # fmt: skip
_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b([^>]*)>")
_ATTRIBUTE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_SVS_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
TIFF_DESCRIPTION, X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 270, 282, 283, 296
CENTIMETER = 3
Pair = tuple[float, float]


def _size(value: object, unit: str) -> float | None:
    try:
        size = float(value) * MICRONS[unit]  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    return size if np.isfinite(size) and size > 0 else None


def _pair(row: float | None, column: float | None) -> Pair | None:
    return None if row is None or column is None else (row, column)


def _ratio(value: Any) -> float:
    """A resolution tag's value: Pillow's IFDRational, or tifffile's (numerator, denominator)."""
    if isinstance(value, tuple):
        return float(value[0]) / float(value[1])
    return float(value)


def tags_pixel_size_um(tags: Mapping[int, Any]) -> Pair | None:
    """The spacing a TIFF's tags (number -> value) state."""
    description = str(tags.get(TIFF_DESCRIPTION, ""))[:65536]
    found = _OME_PIXELS.search(description) if "PhysicalSize" in description else None
    if found:
        pixels = dict(_ATTRIBUTE.findall(found.group(1)))
        return _pair(
            _size(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit", "µm")),
            _size(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm")),
        )
    mpp = _SVS_MPP.search(description) if description.startswith("Aperio") else None
    if mpp:
        return _pair(_size(mpp.group(1), "µm"), _size(mpp.group(1), "µm"))
    try:
        per_x, per_y = 1 / _ratio(tags[X_RESOLUTION]), 1 / _ratio(tags[Y_RESOLUTION])
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    imagej = re.search(r"^unit=(\S+)$", description, re.MULTILINE)
    if description.startswith("ImageJ=") and imagej:
        unit = imagej.group(1).replace("\\u00B5", "µ")
        return _pair(_size(per_y, unit), _size(per_x, unit))
    if tags.get(RESOLUTION_UNIT) == CENTIMETER:
        return _pair(_size(per_y, "cm"), _size(per_x, "cm"))
    return None


def tifffile_pixel_size_um(page: Any) -> Pair | None:
    """The spacing of a tifffile page (level 0 of a slide): its tags'."""
    return tags_pixel_size_um({tag.code: tag.value for tag in page.tags.values()})


def ngff_pixel_size_um(multiscale: Mapping[str, Any]) -> Pair | None:
    """The spacing of an NGFF image's level 0: its ``scale`` on y and x, when the axes
    give a unit (bare numbers are no physical size)."""
    try:
        axes = multiscale["axes"]
        transforms = multiscale["datasets"][0]["coordinateTransformations"]
        scale = next(t["scale"] for t in transforms if t.get("type") == "scale")
        names = [a["name"] for a in axes]
        units = [a.get("unit") for a in axes]
        y, x = names.index("y"), names.index("x")
        return _pair(_size(scale[y], str(units[y])), _size(scale[x], str(units[x])))
    except (KeyError, IndexError, TypeError, ValueError, StopIteration, AttributeError):
        return None


def openslide_pixel_size_um(properties: Mapping[str, str]) -> Pair | None:
    """OpenSlide's ``openslide.mpp-y`` and ``openslide.mpp-x`` (µm per pixel)."""
    return _pair(
        _size(properties.get("openslide.mpp-y"), "µm"),
        _size(properties.get("openslide.mpp-x"), "µm"),
    )
