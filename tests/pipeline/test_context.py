"""The one factory of what a request, a job or a batch runs with: the threshold chosen once,
the class checked once, the predictor and a batch's Context."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from app.codecs.errors import OptionError
from app.codecs.frames import Limits
from app.inference import load_model
from app.inference.card import ModelCard
from app.pipeline.context import Context, Setup, options_for, predictor_for, threshold_for
from tests.nets import BINARY, UNetSpec, default_card, save_model

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


def test_a_batch_context_is_the_setups_model_options_and_limits(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    save_model(path, BINARY, card=default_card(BINARY, threshold=0.4))
    setup = Setup(path, tile=128, batch=2, tta=True, min_area=3, max_pixels=1000)
    context = Context.load(setup)
    assert context.model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (context.options.threshold, context.options.tta, context.options.min_area) == (
        0.4, True, 3
    )  # fmt: skip
    predictor = context.predictor
    assert (predictor.tile_size, predictor.batch_size, predictor.fixed_shape) == (128, 2, False)
    assert context.limits == Limits(1000)


def test_a_predictor_with_another_run_gives_the_engines_answer_through_it(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    save_model(path, SPEC)
    model = load_model(path, "cpu")
    calls: list[tuple[int, ...]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return model.engine.run(batch)

    image = np.random.default_rng(0).integers(0, 256, (150, 170), dtype=np.uint8)
    gated = predictor_for(model, 128, 2, run).predict(image)
    plain = predictor_for(model, 128, 2).predict(image)
    assert calls
    assert np.array_equal(gated.probabilities, plain.probabilities)
