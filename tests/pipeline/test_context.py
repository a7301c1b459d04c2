"""The one factory of a request's Options: the threshold chosen once, the class checked once."""

from __future__ import annotations

import pytest

from app.codecs.errors import OptionError
from app.inference.card import ModelCard
from app.pipeline.context import options_for, threshold_for
from bench.nets import UNetSpec, default_card

SPEC = UNetSpec(depth=2, base=2, out_channels=3)


def card(**extra: object) -> ModelCard:
    return ModelCard(**default_card(SPEC, **extra))


def test_the_threshold_is_the_requests_else_the_cards_else_one_half() -> None:
    binary = ModelCard(**default_card(UNetSpec(depth=2, base=2), threshold=0.3))
    assert threshold_for(binary, 0.6) == 0.6
    assert threshold_for(binary, None) == 0.3
    assert threshold_for(card(), None) == 0.5


def test_options_are_checked_against_the_card_once_made() -> None:
    options = options_for(card(), None, 2, True, 4, True)
    assert (options.threshold, options.class_index, options.tta) == (0.5, 2, True)
    assert (options.min_area, options.outline_objects) == (4, True)
    with pytest.raises(OptionError, match=r"must be in 1\.\.2 \(1 = class_1, 2 = class_2\), got 3"):
        options_for(card(), class_index=3)
