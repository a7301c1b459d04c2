"""Where the tissue is on a slide, so that blocks of bare glass are never predicted.

As whole-slide tools do it (TIAToolbox's ``auto_get_mask``, cellpose's distributed
mode): Otsu's threshold on a small picture of the slide (app/codecs/overview.py) --
of the saturation for RGB, where glass is grey and stained tissue coloured; of the
intensity for gray, where tissue is darker than the lit glass -- then a small
closing. For brightfield slides; not for EM montages or fluorescence without a dark
background, where the background does not stand apart from what is to be segmented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.filters import threshold_otsu

from app.codecs.overview import overview
from app.inference.blocks import Block, BlockGrid
from app.inference.tiler import Region

CLOSING = 2  # px of the picture: the radius of the closing that joins specks of tissue


@dataclass(frozen=True)
class Tissue:
    """The tissue mask (h x w, True = tissue) of a picture of the image, and the level-0
    pixels (rows, cols) each of its pixels covers."""

    mask: npt.NDArray[np.bool_]
    scale: tuple[float, float]

    def touches(self, block: Block, margin: int) -> bool:
        """Whether tissue lies within ``margin`` px of ``block`` (level-0 px)."""
        (sy, sx), (h, w) = self.scale, self.mask.shape
        top = max(0, math.floor((block.rows.start - margin) / sy))
        bottom = min(h, math.ceil((block.rows.stop + margin) / sy))
        left = max(0, math.floor((block.cols.start - margin) / sx))
        right = min(w, math.ceil((block.cols.stop + margin) / sx))
        return bool(self.mask[top:bottom, left:right].any())

    def runs(self, grid: BlockGrid, margin: int) -> tuple[bool, ...]:
        """For each block of ``grid``, in its order: whether it is predicted."""
        return tuple(self.touches(block, margin) for block in grid)


def tissue_mask(picture: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Tissue (True) of an h x w x C picture: Otsu of the saturation (C = 3) or of the
    intensity (C = 1, tissue the darker side), then a closing of radius CLOSING."""
    values = picture.astype(np.float32)
    if values.shape[2] >= 3:
        brightest, dimmest = values[..., :3].max(axis=2), values[..., :3].min(axis=2)
        signal = np.where(brightest > 0, (brightest - dimmest) / np.maximum(brightest, 1), 0)
    else:
        signal = -values[..., 0]  # darker is more
    if float(signal.min()) == float(signal.max()):  # one value: glass only (or tissue only)
        return np.zeros(signal.shape, dtype=bool)
    mask = signal > threshold_otsu(signal)  # type: ignore[no-untyped-call]
    y, x = np.ogrid[-CLOSING : CLOSING + 1, -CLOSING : CLOSING + 1]
    padded = np.pad(mask, CLOSING, mode="edge")  # the closing never erodes the border
    closed = ndimage.binary_closing(padded, structure=x * x + y * y <= CLOSING * CLOSING)
    return np.asarray(closed[CLOSING:-CLOSING, CLOSING:-CLOSING], dtype=np.bool_)


def find_tissue(image: Region) -> Tissue:
    """The tissue of ``image`` (a lazy reader or an array), from its overview."""
    picture, scale = overview(image)
    return Tissue(tissue_mask(picture), scale)
