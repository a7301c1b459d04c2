"""What the object formats share: the objects of a frame by the card's recipe, and colours."""

from __future__ import annotations

import colorsys
from functools import cache

from app.codecs.outputs.base import Options, Provenance
from app.inference.card import Recipe
from app.inference.objects import Objects, find_objects
from app.inference.predictor import Prediction


def recipe(model: Provenance, options: Options) -> Recipe:
    """The card's recipe, with the request's ``min_area`` when it gives one."""
    base = model.card.objects
    return (
        base if options.min_area is None else base.model_copy(update={"min_area": options.min_area})
    )


def objects_of(prediction: Prediction, model: Provenance, options: Options) -> Objects:
    return find_objects(
        prediction.probabilities, prediction.mask, len(model.card.classes), recipe(model, options)
    )


@cache
def colour(index: int) -> tuple[int, int, int]:
    """A bright colour per index, neighbours far apart (the golden angle in hue)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)
