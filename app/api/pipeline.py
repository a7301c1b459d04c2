"""The work of ``POST /segment`` off the event loop: bytes -> frames -> masks -> response bytes.

Runs in the single inference thread (app/api/deps.py, Admission), so only one
decoded image and one probability map are alive at a time. Frames are
predicted and encoded one by one.

Output encoders are a small registry keyed by OutputFormat: ``factory(image,
job, service)`` returns an Encoder. DICOM SEG (DicomSegEncoder, over the
pydicom dataset in ``image.source``) is registered when the `dicom` extra is
installed; without it ``format=dicom-seg`` answers 415.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import IO, Protocol

import numpy as np

from app.api.schemas import MULTI_FRAME, OutputFormat
from app.codecs.images import DecodedImage, decode
from app.codecs.masks import encode_label_png, encode_probability_png, encode_rle
from app.errors import FrameCountError, RequestCancelledError, UnsupportedOutputError
from app.inference import Prediction
from app.service import Service


@dataclass(frozen=True)
class Job:
    """One request's parameters (already validated against the model)."""

    output: OutputFormat
    threshold: float = 0.5
    class_index: int = 1
    tta: bool = False


@dataclass
class Outcome:
    """The response body plus what the request log and metrics report.

    seconds: decode / inference / encode wall time, seconds.
    """

    body: bytes
    media_type: str
    input_format: str
    width: int
    height: int
    frames: int
    tiles: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Encoder(Protocol):
    media_type: str

    def add(self, index: int, prediction: Prediction) -> None: ...

    def finish(self) -> bytes: ...


EncoderFactory = Callable[[DecodedImage, Job, Service], Encoder]


class PngEncoder:
    """``format=png``: the class-index mask as an 8-bit palette PNG (one frame)."""

    media_type = "image/png"

    def __init__(self, image: DecodedImage, job: Job, service: Service) -> None:
        self.classes = len(service.model.card.classes)
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        self.body = encode_label_png(prediction.mask, self.classes)

    def finish(self) -> bytes:
        return self.body


class ProbabilityEncoder:
    """``format=probability``: p(class) as a 16-bit PNG, round(p * 65535) (one frame)."""

    media_type = "image/png"

    def __init__(self, image: DecodedImage, job: Job, service: Service) -> None:
        self.predictor, self.class_index = service.predictor, job.class_index
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        p = self.predictor.class_probability(prediction.probabilities, self.class_index)
        self.body = encode_probability_png(p)

    def finish(self) -> bytes:
        return self.body


class RleEncoder:
    """``format=rle``: the JSON of API.md; ``frame`` in each segment for multi-frame input."""

    media_type = "application/json"

    def __init__(self, image: DecodedImage, job: Job, service: Service) -> None:
        model = service.model
        self.multi = len(image.frames) > 1
        self.classes = model.card.classes
        self.document: dict[str, object] = {
            "height": image.height,
            "width": image.width,
            "model": {
                "name": model.card.name,
                "version": model.card.version,
                "sha256": model.engine.sha256,
            },
        }
        self.segments: list[dict[str, object]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi else None
        self.segments += encode_rle(prediction.mask, self.classes, frame=frame)

    def finish(self) -> bytes:
        return json.dumps({**self.document, "segments": self.segments}).encode()


class DicomSegEncoder:
    """``format=dicom-seg``: every frame's mask in one DICOM SEG over the source instance."""

    media_type = "application/dicom"

    def __init__(self, image: DecodedImage, job: Job, service: Service) -> None:
        from pydicom.dataset import Dataset

        from app.codecs.dicom_seg import check_source

        if not isinstance(image.source, Dataset):
            raise UnsupportedOutputError("format=dicom-seg needs a DICOM input")
        check_source(image.source)  # 422 before any inference (e.g. no plane positions)
        self.source, self.card = image.source, service.model.card
        self.masks: list[np.ndarray] = []

    def add(self, index: int, prediction: Prediction) -> None:
        self.masks.append(prediction.mask)

    def finish(self) -> bytes:
        from app.codecs.dicom_seg import encode_seg

        card = self.card
        return encode_seg(self.source, self.masks, card.classes, card.name, card.version)


ENCODERS: dict[OutputFormat, EncoderFactory] = {
    OutputFormat.png: PngEncoder,
    OutputFormat.probability: ProbabilityEncoder,
    OutputFormat.rle: RleEncoder,
}
if importlib.util.find_spec("highdicom") is not None:  # the `dicom` extra is installed
    ENCODERS[OutputFormat.dicom_seg] = DicomSegEncoder


def check_output(image: DecodedImage, output: OutputFormat) -> EncoderFactory:
    """The encoder for this input and format, or the 415/422 that explains why not."""
    if output == OutputFormat.dicom_seg and image.format != "dicom":
        raise UnsupportedOutputError(
            f"format=dicom-seg needs a DICOM input, this is {image.format.upper()}; "
            "use format=png, rle or probability"
        )
    if len(image.frames) > 1 and output not in MULTI_FRAME:
        usable = "rle or dicom-seg" if image.format == "dicom" else "rle"
        raise FrameCountError(
            f"the input has {len(image.frames)} frames and format={output.value} carries one; "
            f"use format={usable}"
        )
    factory = ENCODERS.get(output)
    if factory is None:
        raise UnsupportedOutputError(
            f"format={output.value} is not available in this installation; use png, rle "
            "or probability"
        )
    return factory


def run_job(
    source: IO[bytes], job: Job, service: Service, cancelled: threading.Event | None = None
) -> Outcome:
    """Decode, predict every frame, encode; the timings go into Server-Timing.

    cancelled: set when the client has gone; the work stops at the next tile
    batch with RequestCancelledError.
    """

    def check(done: int = 0, total: int = 0) -> None:
        if cancelled is not None and cancelled.is_set():
            raise RequestCancelledError("the client closed the connection", done, total)

    check()  # it may have gone while the request waited in the queue
    start = perf_counter()
    image = decode(source.read(), service.limits(job.tta))
    encoder = check_output(image, job.output)(image, job, service)
    decoded = perf_counter()
    outcome = Outcome(b"", encoder.media_type, image.format, image.width, image.height, 0)
    inference = encode = 0.0
    for index, frame in enumerate(image.frames):
        t0 = perf_counter()
        prediction = service.predictor.predict(
            frame, threshold=job.threshold, tta=job.tta, progress=check
        )
        t1 = perf_counter()
        encoder.add(index, prediction)
        outcome.frames, outcome.tiles = index + 1, outcome.tiles + prediction.tiles
        del prediction  # free the probability map before the next frame
        inference, encode = inference + t1 - t0, encode + perf_counter() - t1
    t2 = perf_counter()
    outcome.body = encoder.finish()
    outcome.seconds = {
        "decode": decoded - start,
        "inference": inference,
        "encode": encode + perf_counter() - t2,
    }
    return outcome
