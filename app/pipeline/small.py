"""In memory: bytes -> frames -> predictions -> answer.

``segment_frames`` is the one loop of POST /segment, jobs and ``unet-segment`` over an
image held in memory: frames are predicted and encoded one by one, one probability map
alive at a time. ``segment_request`` is POST /segment's whole request around it, run in the
single inference thread (app/api/admission.py) off the event loop; the encoder comes
from the app's outputs registry (app/codecs/outputs), the decoder from its inputs
registry.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from time import perf_counter
from typing import IO

import numpy as np

from app.codecs.dicom_series import assemble
from app.codecs.errors import ImageTooLargeError
from app.codecs.frames import DecodedImage
from app.codecs.outputs import Encoder, Options, Outputs, Provenance
from app.errors import RequestCancelledError
from app.inference.predictor import Prediction, Predictor
from app.inference.tiler import ProgressFn
from app.pipeline.context import request_limits
from app.service import LARGE_WORK, RecentMasks, Service


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
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Tally:
    """What segmenting an image took: frames and tiles run, inference and encode seconds."""

    frames: int = 0
    tiles: int = 0
    inference: float = 0.0
    encode: float = 0.0


def segment_frames(
    image: DecodedImage,
    encoder: Encoder,
    predictor: Predictor,
    options: Options,
    progress: ProgressFn | None = None,
) -> Tally:
    """Predict every frame and hand it to ``encoder``, one probability map alive at a time.

    The one pipeline of ``POST /segment``, jobs and ``unet-segment``; ``progress``
    is the predictor's (tiles done, total), and may raise to stop there.
    """
    tally = Tally()
    for index, frame in enumerate(image.frames):
        t0 = perf_counter()
        prediction = predictor.predict(
            frame, threshold=options.threshold, tta=options.tta, progress=progress
        )
        t1 = perf_counter()
        encoder.add(index, prediction)
        tally.frames, tally.tiles = index + 1, tally.tiles + prediction.tiles
        del prediction  # free the probability map before the next frame
        tally.inference, tally.encode = (
            tally.inference + t1 - t0,
            tally.encode + perf_counter() - t1,
        )
    return tally


def decode_all(sources: list[IO[bytes]], service: Service, tta: bool) -> tuple[DecodedImage, str]:
    """One image, or several DICOM instances of one series as one image in slice order; and,
    for DICOM, a digest of the parts' bytes in any order (a series is the same in any
    order): the key of its recalled masks, which only DICOM answers use ("" otherwise, and
    no bytes hashed on the way of a PNG).

    The request's limits hold for the whole series: checked from the first
    instance's header for all of them before the others are decoded.
    """
    limits = request_limits(service, tta)
    data = sources[0].read()
    first = service.inputs.decode(data, limits)
    dicom, digests = first.format == "dicom", list[str]()
    if dicom:
        digests.append(hashlib.sha256(data).hexdigest())
    if len(sources) > 1:  # a series: assemble refuses anything but DICOM instances
        limits.check(first.width, first.height, len(sources), "DICOM series")
        images = [first]
        for source in sources[1:]:
            data = source.read()
            digests += [hashlib.sha256(data).hexdigest()] if dicom else []
            images.append(service.inputs.decode(data, limits))
        first = assemble(images)
    return first, hashlib.sha256(" ".join(sorted(digests)).encode()).hexdigest() if dicom else ""


class Keeping:
    """An encoder that also keeps each frame's mask (for RecentMasks)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder, self.masks = encoder, list[np.ndarray]()
        self.media_type, self.headers = encoder.media_type, encoder.headers

    def add(self, index: int, prediction: Prediction) -> None:
        self.masks.append(prediction.mask)
        self.encoder.add(index, prediction)

    def finish(self) -> bytes:
        return self.encoder.finish()


def segment_image(
    image: DecodedImage,
    output: str,
    outputs: Outputs,
    model: Provenance,
    options: Options,
    predictor: Predictor,
    progress: ProgressFn | None = None,
    recall: tuple[RecentMasks, str] | None = None,
) -> tuple[Encoder, Tally]:
    """The encoder of ``output`` fed every frame's prediction: what POST /segment, a job and
    ``unet-segment`` do with an image in memory (its ``finish`` is the answer).

    recall: (the service's recent masks, this request's key): an encoder that needs masks
    only (``masks_only``) takes those of the request just before when its key is this one,
    instead of predicting them again.
    """
    encoder = outputs.encoder(output, image, model, options)
    if recall is None or not getattr(encoder, "masks_only", False):
        return encoder, segment_frames(image, encoder, predictor, options, progress=progress)
    recent, key = recall
    masks = recent.get(key)
    if masks is None or len(masks) != len(image.frames):
        keeping = Keeping(encoder)
        tally = segment_frames(image, keeping, predictor, options, progress=progress)
        recent.put(key, keeping.masks)
        return encoder, tally
    start, none = perf_counter(), np.empty((0, image.height, image.width), np.float32)
    for index, mask in enumerate(masks):
        encoder.add(index, Prediction(none, mask, 0))
    return encoder, Tally(frames=len(masks), encode=perf_counter() - start)


def segment_request(
    sources: list[IO[bytes]],
    output: str,
    options: Options,
    service: Service,
    cancelled: threading.Event | None = None,
) -> Outcome:
    """Decode, predict every frame, encode; the timings go into Server-Timing.

    cancelled: set when the client has gone; the work stops at the next tile
    batch with RequestCancelledError.
    """

    def check(done: int = 0, total: int = 0) -> None:
        if cancelled is not None and cancelled.is_set():
            raise RequestCancelledError("the client closed the connection", done, total)

    check()  # it may have gone while the request waited in the queue
    service.recent.expire()
    start = perf_counter()
    try:
        image, digest = decode_all(sources, service, options.tta)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"{exc}; {LARGE_WORK}") from None
    model = Provenance.of(service.model)
    decoded = perf_counter()
    key = f"{digest} {model.sha256} {options.threshold!r} {options.tta}"
    encoder, tally = segment_image(
        image, output, service.outputs, model, options, service.predictor, check,
        recall=(service.recent, key) if digest else None,
    )  # fmt: skip
    encoding = perf_counter()
    body = encoder.finish()
    outcome = Outcome(
        body, encoder.media_type, image.format, image.width, image.height, tally.frames, tally.tiles
    )
    outcome.headers = dict(encoder.headers)
    outcome.seconds = {
        "decode": decoded - start,
        "inference": tally.inference,
        "encode": tally.encode + perf_counter() - encoding,
    }
    return outcome
