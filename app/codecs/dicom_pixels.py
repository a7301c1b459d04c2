"""DICOM pixels to the model's 0-255 scale: modality LUT, the card's window or the frame's
robust range, colour to RGB (the intensity policy of app/codecs/dicom.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

ROBUST_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (HU for CT): centre c and width w >= 1."""

    center: float
    width: float


def window_from_card(extra: Mapping[str, Any] | None) -> Window | None:
    """The card's optional ``window`` (a ModelCard's ``model_extra``), validated.

    Raises ValueError naming the field when it is not ``{"center": c, "width": w >= 1}``.
    """
    spec = (extra or {}).get("window")
    if spec is None:
        return None
    try:
        window = Window(float(spec["center"]), float(spec["width"]))
    except (TypeError, KeyError, ValueError):
        raise ValueError(
            f'field \'window\' must be {{"center": c, "width": w}} (numbers), got {spec!r}'
        ) from None
    if not (math.isfinite(window.center) and math.isfinite(window.width) and window.width >= 1):
        raise ValueError(f"field 'window' needs a finite center and a width >= 1, got {spec!r}")
    return window


def modality_values(ds: Dataset, stored: np.ndarray) -> npt.NDArray[np.float64]:
    """One gray frame's stored values -> modality values (rescale slope/intercept or LUT).

    stored: H x W as decoded. Returns H x W float64 (e.g. Hounsfield units for CT).
    """
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)


def to_uint8(values: npt.NDArray[np.floating], window: Window | None) -> npt.NDArray[np.uint8]:
    """H x W modality values -> H x W uint8 by the window, or by the robust range.

    Window: DICOM linear VOI, ``y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255`` clipped;
    e.g. c = 40, w = 400 (soft tissue): -160 HU -> 0, 40 HU -> 128, 240 HU -> 255.
    Robust: the 0.5th / 99.5th percentiles -> 0 / 255; a constant frame -> 0.
    """
    if window is not None:
        low, span = window.center - 0.5 - (window.width - 1) / 2, window.width - 1
    else:
        low, high = (float(p) for p in np.percentile(values, ROBUST_PERCENTILES))
        span = high - low
    if span <= 0:  # width 1 is a threshold; a constant frame has no range
        return np.where(values > low, 255, 0).astype(np.uint8)
    scaled = (values - low) * (255.0 / span)
    np.rint(np.clip(scaled, 0, 255, out=scaled), out=scaled)
    result: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return result


def colour_to_uint8(ds: Dataset, pixels: np.ndarray) -> npt.NDArray[np.uint8]:
    """H x W x 3 RGB of any depth -> uint8 (palette expanded, 16-bit scaled 65535 -> 255)."""
    rgb = pixels
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        bits = 8 * rgb.dtype.itemsize
    else:
        bits = int(ds.get("BitsStored") or 8 * rgb.dtype.itemsize)
    if rgb.dtype == np.uint8 and bits <= 8:
        return np.asarray(rgb, dtype=np.uint8)
    scaled = rgb.astype(np.float64) * (255.0 / (2**bits - 1))
    np.rint(np.clip(scaled, 0, 255, out=scaled), out=scaled)
    result: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return result
