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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.filters import threshold_otsu

from app.codecs.outputs import Options
from app.codecs.overview import overview
from app.codecs.pyramid import LabelStore
from app.inference.blocks import Block, BlockGrid
from app.inference.predictor import FLIPS, Predictor
from app.inference.resample import Resampled
from app.inference.tiler import ProgressFn, Region

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
    if picture.shape[2] >= 3:  # max and min in the pixels' own type: one float plane
        brightest = picture[..., :3].max(axis=2).astype(np.float32)
        spread = brightest - picture[..., :3].min(axis=2)
        signal = spread / np.maximum(brightest, 1)
    else:
        signal = -picture[..., 0].astype(np.float32)  # darker is more
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


def context_px(predictor: Predictor) -> int:
    """How far from a pixel the network looks (level-0 px): its halo, and for a
    same-padding network the margin its tiles discard."""
    geometry = predictor.geometry
    return geometry.halo + (predictor.margin if geometry.padding == "same" else 0)


def background(
    image: Region,
    grid: BlockGrid,
    predictor: Predictor,
    options: Options,
    store: LabelStore,
    stage: Callable[[str], ProgressFn],
) -> tuple[bool, ...]:
    """Which blocks of ``grid`` run: those with tissue within the network's context. The
    tissue goes into the store; ``background`` progress: (tiles to run, tiles of all)."""
    tissue = find_tissue(image.image if isinstance(image, Resampled) else image)
    if isinstance(image, Resampled):  # found on the level read: its scale to what is segmented
        (sy, sx), (fy, fx) = tissue.scale, image.factors
        tissue = Tissue(tissue.mask, (sy / fy, sx / fx))
    store.add_tissue(tissue.mask, tissue.scale)
    runs = tissue.runs(grid, context_px(predictor))
    flips = FLIPS if options.tta else FLIPS[:1]
    kept = [block for block, run in zip(grid, runs, strict=True) if run]
    stage("background")(grid.tile_count(flips, kept), grid.tile_count(flips))
    return runs
