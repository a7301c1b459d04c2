"""Service: the loaded model and everything a request needs from it, built once per app.

Made in the app's lifespan (app/main.py) and kept in ``app.state.service``;
never a module global, so two apps with different models in one process do
not interfere.
"""

from __future__ import annotations

import importlib.util
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from types import FrameType

import numpy as np

from app.codecs.images import Decoders, default_decoders
from app.codecs.outputs import Outputs
from app.errors import TooMuchWorkError
from app.inference import LoadedModel, ModelCard, Predictor
from app.metrics import Metrics
from app.settings import Settings

# Tiles come in the network's sizes, so an image of the same pixel count as the square
# but another shape costs a little more: 6 % for 128 x 512 against 256 x 256 with a
# 20 px halo, 23 % for 256 x 262144 against 8192 x 8192. The allowance keeps such
# images served; a 1 x 1,000,000 strip costs 2x the square of 8192 x 8192 and 10,000
# pages of 1 x 1 px 2.8x: refused.
SHAPE_ALLOWANCE = 1.25
LARGE_WORK = "large images go through POST /jobs (or unet-segment)"


def input_formats(card: ModelCard) -> Decoders:
    """The input registry for this model: DICOM decoded with the card's window when the
    `dicom` extra is installed (else recognised, 415). ValueError for a bad window."""
    if importlib.util.find_spec("pydicom") is None:
        return default_decoders()
    import app.codecs.dicom_seg  # noqa: F401  # highdicom's import (~0.4 s) now, not in a request
    from app.codecs.dicom_pixels import window_from_card

    return default_decoders(window_from_card(card.model_extra))


class WorkLimit:
    """The most work one request may cost: what an image of ``max_pixels`` costs in square tiles.

    Work is counted as network input pixels (tiles x tile area, x 4 with TTA,
    x frames); the budget is the square image's, times SHAPE_ALLOWANCE. So a thin
    strip (1 x 1,000,000 px: ~1,400 tiles) or thousands of 1 x 1 pages (one
    whole tile each) is refused from its header, before any pixel is decoded,
    while images of any reasonable shape up to the pixel limit pass.
    """

    def __init__(self, predictor: Predictor, max_pixels: int) -> None:
        self.predictor = predictor
        side = math.isqrt(max_pixels)
        self.square = predictor.work(side, side)
        self.budget = int(self.square * SHAPE_ALLOWANCE)
        self._per_frame: dict[tuple[int, int, bool], int] = {}

    def cost(self, width: int, height: int, frames: int, tta: bool) -> int:
        key = (height, width, tta)
        if key not in self._per_frame:  # the plan of a 1 x 67M strip takes ~0.1 s
            self._per_frame[key] = self.predictor.work(height, width, tta=tta)
        return self._per_frame[key] * frames

    def check(self, width: int, height: int, frames: int, tta: bool) -> None:
        """TooMuchWorkError (413) when the image costs more than the budget."""
        cost = self.cost(width, height, frames, tta)
        if cost > self.budget:
            raise TooMuchWorkError(
                f"segmenting {width} x {height} px x {frames} frame(s){' with tta' if tta else ''} "
                f"would run the network over {cost} pixels, {cost / self.square:.1f} times what "
                f"an image of UNET_MAX_IMAGE_PIXELS in square tiles costs ({self.square}; "
                f"{SHAPE_ALLOWANCE:g}x is allowed); send smaller or squarer images, fewer "
                f"frames, or no tta; {LARGE_WORK}"
            )


class RecentMasks:
    """The masks of the last DICOM request whose answer needs nothing else (dicom-seg, and
    dicom-sr but for a watershed count), for the next request of the same input: the DICOM
    gateway and the Orthanc plugin ask for a series' SR right after its SEG, and the SR
    measures the very masks of that SEG -- without this, the series' inference twice.

    One entry, at most MAX_BYTES of masks, used once and within TTL_S (the first request
    after that drops it, whatever its format); the key is a digest of
    the input's bytes, the model's and the options that change a mask (threshold, TTA).
    The masks are those the same inference gives (it is deterministic), so an answer made
    from them is the answer made without them, byte for byte (tests/api/test_dicom_sr.py).
    """

    MAX_BYTES = 128 << 20
    TTL_S = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[str, float, list[np.ndarray]] | None = None

    def get(self, key: str) -> list[np.ndarray] | None:
        with self._lock:
            entry, self._entry = self._entry, None  # taken: used once, or stale
            if entry is None or entry[0] != key or perf_counter() - entry[1] > self.TTL_S:
                return None
            return entry[2]

    def expire(self) -> None:
        """Drop the entry once it is too old to be used: called at every request, so that
        an idle service does not keep a series' masks past the next request."""
        with self._lock:
            if self._entry is not None and perf_counter() - self._entry[1] > self.TTL_S:
                self._entry = None

    def put(self, key: str, masks: list[np.ndarray]) -> None:
        with self._lock:
            small = sum(m.nbytes for m in masks) <= self.MAX_BYTES
            self._entry = (key, perf_counter(), masks) if small else None


@dataclass
class Service:
    """Everything a request needs, made once in the lifespan.

    inputs / outputs: this app's registries of input and output formats (the DICOM
    decoder carries this model's window); never shared with another app.
    """

    settings: Settings
    model: LoadedModel
    predictor: Predictor
    metrics: Metrics
    work: WorkLimit
    inputs: Decoders
    outputs: Outputs
    ready: bool = False
    # Set on SIGTERM: bodies still being read are refused (503) so that shutdown is not
    # held up by a client that stalls its upload.
    stopping: threading.Event = field(default_factory=threading.Event)
    recent: RecentMasks = field(default_factory=RecentMasks)

    @property
    def name(self) -> str:
        """The model's name in the repository (``model=``): its file's stem."""
        return self.settings.model_path.stem


def stop_reading_on_signals(stopping: threading.Event) -> Callable[[], None]:
    """On SIGTERM/SIGINT set ``stopping`` (every model's Service shares it) first, then run
    the handler already there.

    That handler is uvicorn's (it stops accepting and waits for the requests in
    flight); ``stopping`` makes bodies still being read answer 503 at once, so
    that a client stalling its upload cannot hold the shutdown up. Returns the undo.
    Outside the main thread (TestClient) signals cannot be handled: nothing to do.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        before = previous[signal.Signals(signum)]
        if callable(before):
            before(signum, frame)
        else:  # the default action (or ignore), as if we had never been here
            signal.signal(signum, before)
            signal.raise_signal(signum)

    def undo() -> None:
        for sig, before in previous.items():
            signal.signal(sig, before)

    for sig in previous:
        signal.signal(sig, handler)
    return undo
