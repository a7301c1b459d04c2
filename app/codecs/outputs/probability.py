"""``format=probability``: p(class) as a 16-bit PNG, round(p * 65535) (one frame)."""

from __future__ import annotations

from app.codecs.encode import encode_probability_png
from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Options, Output, Provenance
from app.inference.objects import class_probability
from app.inference.predictor import Prediction


class ProbabilityEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "image/png"

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.card, self.class_index = model.card, options.class_index
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        p = class_probability(prediction.probabilities, self.class_index)
        self.body = encode_probability_png(p)

    def finish(self) -> bytes:
        return self.body


OUTPUT = Output(
    "probability",
    ProbabilityEncoder.media_type,
    "p(class) as a 16-bit PNG, round(p * 65535)",
    ProbabilityEncoder,
    extension="prob.png",
)
