"""``format=rle``: COCO RLE per class as the JSON of API.md; ``frame`` per segment for
multi-frame input."""

from __future__ import annotations

import json

from app.codecs.images import DecodedImage
from app.codecs.masks import encode_rle
from app.codecs.outputs.base import Model, Options, Output, json_header
from app.inference.predictor import Prediction


class RleEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "application/json"

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        self.multi = len(image.frames) > 1
        self.classes = model.card.classes
        self.document = json_header(image, model)
        self.segments: list[dict[str, object]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi else None
        self.segments += encode_rle(prediction.mask, self.classes, frame=frame)

    def finish(self) -> bytes:
        return json.dumps({**self.document, "segments": self.segments}).encode()


OUTPUT = Output(
    "rle", RleEncoder.media_type, "COCO RLE per class (JSON)", RleEncoder, multi_frame=True
)
