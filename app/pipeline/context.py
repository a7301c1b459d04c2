"""What a request, a job or a batch runs with, made in one place: its Options, checked once
against the model card (a 422 naming the bad option, before any body is read), and the
threshold when none is asked (the card's calibrated one, else 0.5)."""

from __future__ import annotations

from app.codecs.outputs import Options
from app.inference.card import ModelCard

DEFAULT_THRESHOLD = 0.5  # when neither the request nor the model card gives one


def threshold_for(card: ModelCard, requested: float | None) -> float:
    """The request's threshold, else the card's calibrated one, else 0.5."""
    return requested if requested is not None else card.threshold or DEFAULT_THRESHOLD


def options_for(
    card: ModelCard,
    threshold: float | None = None,
    class_index: int = 1,
    tta: bool = False,
    min_area: int | None = None,
    objects: bool = False,
) -> Options:
    """The Options of a request (POST /segment, POST /jobs) or a batch (unet-segment, Dask),
    checked against ``card``: OptionError (422) for a class the model does not have."""
    options = Options(threshold_for(card, threshold), class_index, tta, min_area, objects)
    options.check(card)
    return options
