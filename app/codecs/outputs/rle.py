"""``format=rle``: COCO RLE per class as the JSON of API.md; ``frame`` per segment for
multi-frame input."""

from __future__ import annotations

import json

from app.codecs.images import DecodedImage
from app.codecs.masks import encode_rle
from app.codecs.outputs.base import Model, Options, Output
from app.inference.predictor import Prediction


class RleEncoder:
    media_type = "application/json"

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        card = model.card
        self.multi = len(image.frames) > 1
        self.classes = card.classes
        self.document: dict[str, object] = {
            "height": image.height,
            "width": image.width,
            "model": {"name": card.name, "version": card.version, "sha256": model.sha256},
        }
        self.segments: list[dict[str, object]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi else None
        self.segments += encode_rle(prediction.mask, self.classes, frame=frame)

    def finish(self) -> bytes:
        return json.dumps({**self.document, "segments": self.segments}).encode()


OUTPUT = Output(
    "rle", RleEncoder.media_type, "COCO RLE per class (JSON)", RleEncoder, multi_frame=True
)
