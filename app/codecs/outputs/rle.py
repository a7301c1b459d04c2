"""``format=rle``: COCO RLE per class as the JSON of API.md; ``frame`` per segment for
multi-frame input."""

from __future__ import annotations

import json

from app.codecs.encode import encode_rle
from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Options, Output, Provenance, json_header
from app.inference.predictor import Prediction


class RleEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "application/json"

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.multi = len(image.frames) > 1
        # A DICOM series sent together: each segment names its instance instead of a frame.
        datasets = getattr(image.source, "datasets", None)
        self.instances = [str(d.SOPInstanceUID) for d in datasets] if datasets else None
        self.classes = model.card.classes
        self.document = json_header(image, model)
        self.segments: list[dict[str, object]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi and self.instances is None else None
        segments = encode_rle(prediction.mask, self.classes, frame=frame)
        if self.instances is not None:
            segments = [{"sop_instance_uid": self.instances[index], **s} for s in segments]
        self.segments += segments

    def finish(self) -> bytes:
        return json.dumps({**self.document, "segments": self.segments}).encode()


OUTPUT = Output(
    "rle",
    RleEncoder.media_type,
    "COCO RLE per class (JSON)",
    RleEncoder,
    multi_frame=True,
    extension="rle.json",
)
