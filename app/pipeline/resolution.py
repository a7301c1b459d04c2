"""The input's pixel size against the model's (the card's ``pixel_size_um``), for images
that go block by block: a slide scanned at 0.25 µm/px fed to a 0.5 µm/px model would
segment nonsense, so it is segmented at the model's pixel size and the result brought
back to the slide's level-0 size.

The input's size is ``--pixel-size`` (jobs: ``pixel_size``) when given, else what the
file states (app/codecs/pixel_size.py). Within TOLERANCE of the model's it runs as it is;
a file that states more than MOST times more or less is not believed (print resolutions
in pixels per centimetre are common), the user who does is refused.
Otherwise the level of the file's pyramid nearest at or above the model's resolution is
read, resampled a rectangle at a time (app/inference/resample.py: the area mean when
shrinking, linear when enlarging), and the result brought back to level 0: nearest for
classes and object ids, linear for the probability, polygons scaled. A model card
without ``pixel_size_um`` checks nothing; a card with one and an input without one
gives one WARNING.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.codecs.outputs.base import OUTLINES
from app.codecs.pyramid import LabelStore, chunk_slices
from app.errors import BadParameterError
from app.inference.card import ModelCard
from app.inference.resample import Resampled
from app.inference.tiler import Region

TOLERANCE = 0.10  # the largest relative difference taken as the same pixel size
MOST = 16  # the largest factor resampled: a file stating more is not believed
log = logging.getLogger("app.pipeline")


@dataclass(frozen=True)
class Resolution:
    """size: the input's (row, column) pixel size in µm, if known; source: what is
    segmented (the image, or a level of it at the model's pixel size); shape: level 0's
    (h, w) to bring the result back to, None when ``source`` is the image itself."""

    size: tuple[float, float] | None
    source: Region
    shape: tuple[int, int] | None = None


def input_pixel_size(image: Region, stated: float | None) -> tuple[float, float] | None:
    """(row, column) spacing in µm: ``stated`` (the user's), else the file's, else None."""
    if stated is not None:
        return stated, stated
    found: tuple[float, float] | None = getattr(image, "pixel_size_um", None)
    return found


def resolve(
    card: ModelCard, image: Region, stated: float | None, name: str, warn: bool = True
) -> Resolution:
    """What to segment for ``image`` so that the model sees its own pixel size; ``warn``:
    log the WARNING of an input without one."""
    size, model = input_pixel_size(image, stated), card.pixel_size_um
    if model is None or size is None:
        if model is not None and warn:
            log.warning(
                "%s states no pixel size and the model %s works at %g µm/px: segmented as "
                "if it were; give --pixel-size (jobs: pixel_size) to have it checked",
                name, card.name, model,
            )  # fmt: skip
        return Resolution(size, image)
    if max(abs(s / model - 1) for s in size) <= TOLERANCE:
        return Resolution(size, image)
    if max(max(s / model, model / s) for s in size) > MOST:
        shown = " x ".join(f"{s:g}" for s in size)
        if stated is not None:
            raise BadParameterError(
                f"pixel size {stated:g} µm is more than {MOST}x from the model's "
                f"{model:g} µm/px: resampling that far is refused"
            )
        log.warning(
            "%s states %s µm/px, more than %dx from the model %s's %g µm/px: not believed "
            "(a print resolution?); segmented as it is; give --pixel-size (jobs: pixel_size)",
            name, shown, MOST, card.name, model,
        )  # fmt: skip
        return Resolution(None, image)
    height, width = image.shape[:2]
    level, (py, px) = image, size
    for lower in getattr(image, "lower", ()):  # finer first: the coarsest at or above wins
        ly, lx = size[0] * height / lower.shape[0], size[1] * width / lower.shape[1]
        if max(ly, lx) <= model * (1 + TOLERANCE):
            level, (py, px) = lower, (ly, lx)
    shape = (round(level.shape[0] * py / model), round(level.shape[1] * px / model))
    if min(shape) < 1:
        shape = (max(shape[0], 1), max(shape[1], 1))
    return Resolution(size, Resampled(level, shape), (height, width))


class _Plane:
    """A 2-d array seen as H x W x 1 (for Resampled)."""

    def __init__(self, array: Any) -> None:
        self.array, self.dtype = array, np.dtype(array.dtype)
        self.shape = (*array.shape, 1)

    def __getitem__(self, key: tuple[slice, slice]) -> Any:
        return np.asarray(self.array[key])[:, :, None]


def rescale_store(small: LabelStore, path: Path, shape: tuple[int, int]) -> LabelStore:
    """``small`` (at the model's pixel size) brought to ``shape`` in a new store at ``path``,
    chunk by chunk: nearest for the labels, linear for the probability."""
    height, width = shape
    labels = small.labels
    probability = small.probability is not None
    big = LabelStore(path, height, width, small.chunks, probability, labels.dtype.type)
    h, w = labels.shape
    fine = Resampled(_Plane(small.probability), shape, linear=True) if probability else None
    for rows, cols in chunk_slices(shape, big.chunks):
        ys = np.minimum(((np.arange(rows.start, rows.stop) + 0.5) * h / height).astype(int), h - 1)
        xs = np.minimum(((np.arange(cols.start, cols.stop) + 0.5) * w / width).astype(int), w - 1)
        here = np.asarray(labels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        big.labels[rows, cols] = here[np.ix_(ys - ys.min(), xs - xs.min())]
        if fine is not None and big.probability is not None:
            big.probability[rows, cols] = fine[rows, cols][:, :, 0]
    return big


def bring_back(small: LabelStore, path: Path, shape: tuple[int, int]) -> LabelStore:
    """The finished store at the model's pixel size brought to level 0's ``shape`` at
    ``path``: its labels and probability, its GeoJSON (already in level-0 coordinates), its
    tissue label (at a scale to level 0); ``small`` removed."""
    big = rescale_store(small, path, shape)
    if (small.path / OUTLINES).exists():
        os.replace(small.path / OUTLINES, big.path / OUTLINES)
    if "tissue" in small.group:
        tissue: Any = small.group["tissue"]
        transform = tissue.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        sy, sx = transform[0]["scale"]
        h, w = small.labels.shape
        big.add_tissue(np.asarray(tissue["0"]), (sy * shape[0] / h, sx * shape[1] / w))
    shutil.rmtree(small.path, ignore_errors=True)
    return big
