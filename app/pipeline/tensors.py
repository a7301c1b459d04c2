"""The Open Inference Protocol's inference (POST /v2/models/{name}/infer): an image given as
a tensor, predicted by the same loop as POST /segment (segment_frames), its masks and
probabilities kept as tensors. Run in the inference thread, like /segment's requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.codecs.frames import DecodedImage
from app.codecs.outputs import Options
from app.codecs.tensors import parse_request, read_header, response
from app.inference.predictor import Prediction
from app.inference.tiler import ProgressFn
from app.pipeline.context import options_for, request_limits
from app.pipeline.small import Tally, segment_frames
from app.service import Service


class Stacking:
    """An encoder that keeps what was asked of every frame: masks (N x H x W uint8) and
    probabilities (N x P x H x W float32, P = 1 for sigmoid, K for softmax)."""

    media_type = "application/octet-stream"

    def __init__(self, image: DecodedImage, wanted: set[str]) -> None:
        self.headers: dict[str, str] = {}
        self.wanted, self.frames = wanted, len(image.frames)
        self.tensors: dict[str, np.ndarray] = {}
        self.shape = (image.height, image.width)

    def add(self, index: int, prediction: Prediction) -> None:
        for name, array in (("mask", prediction.mask), ("probability", prediction.probabilities)):
            if name in self.wanted:
                if name not in self.tensors:
                    self.tensors[name] = np.empty((self.frames, *array.shape), array.dtype)
                self.tensors[name][index] = array

    def finish(self) -> bytes:
        return b""


def infer_tensors(
    image: DecodedImage,
    wanted: set[str],
    options: Options,
    service: Service,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, np.ndarray], Tally]:
    """Every frame of ``image`` predicted with the service's predictor (as /segment does),
    the outputs in ``wanted`` by name."""
    stacking = Stacking(image, wanted)
    tally = segment_frames(image, stacking, service.predictor, options, progress=progress)
    return stacking.tensors, tally


@dataclass
class TensorAnswer:
    """The response's body (and its JSON header's length when tensors go as binary data),
    and what the request log and metrics report."""

    content: bytes
    header_length: int | None
    width: int
    height: int
    tally: Tally


def answer_request(
    body: bytes,
    header_length: int | None,
    name: str,
    service: Service,
    progress: ProgressFn | None = None,
) -> TensorAnswer:
    """An inference request of the protocol, whole: validated, its limits checked from the
    shape, predicted, answered. In the inference thread: parsing a large JSON body and
    encoding the outputs never hold the event loop up."""
    header, binary = read_header(body, header_length)
    given = header.parameters
    tensor = parse_request(header, binary, request_limits(service, given.tta))
    del binary
    options = options_for(service.model.card, given.threshold, 1, given.tta)
    tensors, tally = infer_tensors(tensor.image, set(tensor.outputs), options, service, progress)
    version = service.model.card.version
    content, length = response(name, version, tensor.id, tensors, tensor.outputs)
    return TensorAnswer(content, length, tensor.image.width, tensor.image.height, tally)
