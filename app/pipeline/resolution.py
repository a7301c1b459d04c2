"""The input's pixel size against the model's (the card's ``pixel_size_um``), for images
that go block by block: a slide scanned at 0.25 µm/px fed to a 0.5 µm/px model segments
nonsense, so it is refused (422) with both sizes, rather than segmented silently.

The input's size is ``--pixel-size`` (jobs: ``pixel_size``) when given, else what the
file states (app/codecs/pixel_size.py). A model card without ``pixel_size_um`` checks
nothing; a card with one and an input without one gives one WARNING.
"""

from __future__ import annotations

import logging

from app.errors import ResolutionError
from app.inference.card import ModelCard
from app.inference.tiler import Region

TOLERANCE = 0.10  # the largest relative difference taken as the same pixel size
log = logging.getLogger("app.pipeline")


def input_pixel_size(image: Region, stated: float | None) -> tuple[float, float] | None:
    """(row, column) spacing in µm: ``stated`` (the user's), else the file's, else None."""
    if stated is not None:
        return stated, stated
    found: tuple[float, float] | None = getattr(image, "pixel_size_um", None)
    return found


def check_resolution(
    card: ModelCard, image: Region, stated: float | None, name: str
) -> tuple[float, float] | None:
    """The input's pixel size; ResolutionError when the model states one and the input's
    is more than TOLERANCE off it."""
    size = input_pixel_size(image, stated)
    model = card.pixel_size_um
    if model is None:
        return size
    if size is None:
        log.warning(
            "%s states no pixel size and the model %s works at %g µm/px: segmented as if "
            "it were; give --pixel-size (jobs: pixel_size) to have it checked",
            name, card.name, model,
        )  # fmt: skip
        return None
    if max(abs(s / model - 1) for s in size) > TOLERANCE:
        shown = " x ".join(f"{s:g}" for s in size)
        raise ResolutionError(
            f"{name} is {shown} µm/px and the model {card.name} works at {model:g} µm/px; "
            "resampling to the model's pixel size is not built yet: give the image at "
            f"{model:g} µm/px (a level of its pyramid), or --pixel-size if the file is wrong"
        )
    return size
