"""The Open Inference Protocol's inference (POST /v2/models/{name}/infer): an image given as
a tensor, predicted by the same loop as POST /segment (segment_frames), its masks and
probabilities kept as tensors. Run in the inference thread, like /segment's requests.
"""

from __future__ import annotations

import numpy as np

from app.codecs.frames import DecodedImage
from app.codecs.outputs import Options
from app.inference.predictor import Prediction
from app.inference.tiler import ProgressFn
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
