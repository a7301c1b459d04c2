"""The work of ``POST /segment`` off the event loop: bytes -> frames -> predictions -> answer.

Runs in the single inference thread (app/api/admission.py), so only one decoded
image and one probability map are alive at a time. Frames are predicted and
encoded one by one; the encoder comes from the app's outputs registry
(app/codecs/outputs), the decoder from its inputs registry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import perf_counter
from typing import IO

from app.codecs.dicom_series import assemble
from app.codecs.errors import ImageTooLargeError
from app.codecs.frames import DecodedImage
from app.codecs.outputs import Model, Options
from app.errors import RequestCancelledError
from app.service import LARGE_WORK, Service, segment_frames


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


def decode_all(sources: list[IO[bytes]], service: Service, tta: bool) -> DecodedImage:
    """One image, or several DICOM instances of one series as one image in slice order.

    The request's limits hold for the whole series: checked from the first
    instance's header for all of them before the others are decoded.
    """
    limits = service.limits(tta)
    first = service.inputs.decode(sources[0].read(), limits)
    if len(sources) == 1:
        return first
    limits.check(first.width, first.height, len(sources), "DICOM series")
    return assemble([first, *(service.inputs.decode(s.read(), limits) for s in sources[1:])])


def run_job(
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
    start = perf_counter()
    try:
        image = decode_all(sources, service, options.tta)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"{exc}; {LARGE_WORK}") from None
    model = Model(service.model.card, service.model.engine.sha256)
    encoder = service.outputs.encoder(output, image, model, options)
    decoded = perf_counter()
    work = segment_frames(image, encoder, service.predictor, options, progress=check)
    encoding = perf_counter()
    body = encoder.finish()
    outcome = Outcome(
        body, encoder.media_type, image.format, image.width, image.height, work.frames, work.tiles
    )
    outcome.headers = dict(encoder.headers)
    outcome.seconds = {
        "decode": decoded - start,
        "inference": work.inference,
        "encode": work.encode + perf_counter() - encoding,
    }
    return outcome
