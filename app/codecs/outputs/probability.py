"""``format=probability``: p(class) as a 16-bit PNG, round(p * 65535) (one frame)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.codecs.images import DecodedImage
from app.codecs.masks import encode_probability_png
from app.codecs.outputs.base import Model, Options, Output
from app.inference.card import ModelCard
from app.inference.predictor import Prediction


def class_probability(
    probs: npt.NDArray[np.float32], card: ModelCard, class_index: int
) -> npt.NDArray[np.float32]:
    """H x W probability of one non-background class (sigmoid models: the only channel);
    ``class_index`` checked by Options.check."""
    channel = 0 if card.activation == "sigmoid" else class_index
    result: npt.NDArray[np.float32] = probs[channel]
    return result


class ProbabilityEncoder:
    media_type = "image/png"

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        self.card, self.class_index = model.card, options.class_index
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        p = class_probability(prediction.probabilities, self.card, self.class_index)
        self.body = encode_probability_png(p)

    def finish(self) -> bytes:
        return self.body


OUTPUT = Output(
    "probability",
    ProbabilityEncoder.media_type,
    "p(class) as a 16-bit PNG, round(p * 65535)",
    ProbabilityEncoder,
)
