"""``format=png``: the class-index mask as one 8-bit PNG of the input's size (one frame)."""

from __future__ import annotations

from app.codecs.encode import encode_label_png
from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Options, Output, Provenance
from app.inference.predictor import Prediction


class PngEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "image/png"

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.classes = len(model.card.classes)
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        self.body = encode_label_png(prediction.mask, self.classes)

    def finish(self) -> bytes:
        return self.body


OUTPUT = Output(
    "png", PngEncoder.media_type, "the class-index mask, 8-bit PNG", PngEncoder, extension="png"
)
