"""``format=instances``: the object ids as a 16-bit grayscale PNG (0 = no object, 1..N),
a 32-bit TIFF above 65535 objects; ``X-Object-Count: N`` (one frame)."""

from __future__ import annotations

from app.codecs.encode import encode_instances
from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import objects_of
from app.codecs.outputs.base import Options, Output, Provenance
from app.inference.predictor import Prediction


class InstancesEncoder:
    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.model, self.options = model, options
        self.media_type, self.body = "image/png", b""
        self.headers: dict[str, str] = {}

    def add(self, index: int, prediction: Prediction) -> None:
        objects = objects_of(prediction, self.model, self.options)
        self.body, self.media_type = encode_instances(objects.labels)
        self.headers = {"X-Object-Count": str(objects.count)}

    def finish(self) -> bytes:
        return self.body


OUTPUT = Output(
    "instances",
    "image/png",
    "object ids, 16-bit PNG (32-bit TIFF past 65535)",
    InstancesEncoder,
    extension="instances.png",
)
