"""The gateway's work, in threads of their own so that a slow destination never holds up
the segmentation of other series, nor another destination:

- the segmenter closes stable rounds and sends each to the service (retried with back-off
  while it is unreachable or busy; a 4xx refuses the round for good, with its reason);
- a sender per destination delivers each round's results there, retried on its own.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from app.gateway import client
from app.gateway.metrics import Metrics
from app.gateway.settings import GatewaySettings
from app.gateway.store import GatewayStore, Round

log = logging.getLogger("app.gateway")
POLL_S = 0.2
MAX_BACKOFF_S = 60.0


def modality(path: Path) -> str:
    """The Modality of a stored instance (its header only); "" when it has none or cannot
    be read (the service then says what is wrong with the series)."""
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except (InvalidDicomError, OSError, ValueError):
        return ""
    return str(getattr(header, "Modality", ""))


def _refers(results: dict[str, bytes]) -> bool:
    """Whether the SR (when there is one) measures this SEG: it quotes the SEG's SOP
    Instance UID. A SEG kept from an earlier try and an SR made now by a model replaced
    meanwhile would not go together (their UIDs come from the model's hash)."""
    if "sr" not in results:
        return True
    try:
        seg = dcmread(io.BytesIO(results["seg"]), stop_before_pixels=True)
        return str(seg.SOPInstanceUID).encode("ascii") in results["sr"]
    except (InvalidDicomError, AttributeError, ValueError, EOFError):  # made again, then
        return False


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 1, 2, 4 ... 60."""
    return min(MAX_BACKOFF_S, 2.0**attempts)


class Worker:
    def __init__(
        self, settings: GatewaySettings, store: GatewayStore, metrics: Metrics, tls: Any = None
    ) -> None:
        self.settings, self.store, self.metrics, self.tls = settings, store, metrics, tls
        self.destinations = {d.name: d for d in settings.dicom_destinations}
        self._stop = threading.Event()
        # one sender per destination: one that hangs until its time-out holds up no other.
        # Each loop waits POLL_S or until woken: the senders as soon as a round is segmented.
        steps: dict[str, Callable[[], None]] = {"segmenter": self.segment_due}
        for number, name in enumerate(self.destinations, 1):
            steps[f"sender-{number}"] = functools.partial(self.send_due, name)
        self._wake = {name: threading.Event() for name in steps}
        self._threads = [
            threading.Thread(
                target=self._loop, args=(step, self._wake[name]), name=f"unet-{name}", daemon=True
            )  # daemon: a request in flight at SIGTERM does not hold the exit up
            for name, step in steps.items()
        ]

    def start(self) -> None:
        for waiting, count in self.store.counts().items():
            name = waiting.removeprefix("to ")
            if waiting.startswith("to ") and name not in self.destinations:
                log.warning(
                    "%d round(s) wait for %s, no longer in UNET_DICOM_DESTINATIONS: they stay "
                    "queued until it is again", count, name,
                )  # fmt: skip
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        deadline = time.monotonic() + 30  # shared: several senders hung in a time-out
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _loop(self, step: Callable[[], None], wake: threading.Event) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception:  # a fault of ours: logged, the loop goes on
                log.exception("gateway step failed; retrying")
                self._stop.wait(1.0)
            wake.wait(POLL_S)
            wake.clear()  # woken before the step that follows: it sees what woke it

    def segment_due(self) -> None:
        for item in self.store.close_stable(self.settings.dicom_stable_seconds):
            self.metrics.series.labels("received").inc()
            log.info("series %s round %d is stable", item.name, item.round)
        for item in self.store.due("segmenting"):
            if self._stop.is_set():
                return
            try:
                self._segment(item)
            except Exception as exc:  # a fault of ours on this round: later, and the others go on
                delay = backoff(item.attempts)
                log.exception(
                    "series %s: %s; again in %.0f s", item.name, type(exc).__name__, delay
                )
                self.store.postpone(item, delay, type(exc).__name__)

    def _segment(self, item: Round) -> None:
        files = self.store.files(item)
        if not files:  # nothing on disk (a round emptied by a crash): nothing to do
            self.store.refused(item, "no instance on disk")
            return
        outcome = client.choose_model(self.settings, modality(files[0]))
        if outcome.kind != "ok":
            self._not_segmented(item, outcome, "skipped")
            return
        model = outcome.detail
        series = client.multipart_related([f.read_bytes() for f in files])
        earlier = bool(self.store.result_files(item))  # a try that failed after its SEG
        results, outcome = self._results(item, series, model, reuse=True)
        if earlier and results is not None and not _refers(results):  # another model's SEG
            self.store.forget_results(item)
            results, outcome = self._results(item, series, model, reuse=False)
        if results is None:
            self._not_segmented(item, outcome, "refused")
            return
        self.store.segmented(item, results, list(self.destinations))
        for name, wake in self._wake.items():
            if name.startswith("sender"):
                wake.set()
        self.metrics.series.labels("segmented").inc()
        where = f"{len(self.destinations)} destination(s)" if self.destinations else "kept"
        made = " and ".join(k.upper() for k in results)
        log.info(
            "series %s: %d instances segmented by %s (%s); to %s",
            item.name, len(files), model or "the default model", made, where,
        )  # fmt: skip

    def _results(
        self, item: Round, series: tuple[bytes, str], model: str, reuse: bool
    ) -> tuple[dict[str, bytes] | None, client.Outcome]:
        """The round's results, asked of the service in turn (``reuse``: those a try that
        failed after them left on disk are taken as they are); None, and the outcome that
        ended it, when one failed or the SEG was refused."""
        results: dict[str, bytes] = {}
        outcome = client.Outcome("ok", "")
        for kind in self.settings.dicom_results:  # the SEG first: without it, nothing
            kept = self.store.kept_result(item, kind) if reuse else None
            outcome = client.Outcome("ok", "kept", kept) if kept is not None else (
                client.segment(self.settings, series, kind, model)
            )  # fmt: skip
            if outcome.kind == "ok":
                results[kind] = outcome.body
                if kept is None:
                    self.store.keep_result(item, kind, outcome.body)
            elif outcome.kind == "refused" and results:  # a SEG without an SR (no geometry)
                log.warning("series %s: no %s: %s", item.name, kind.upper(), outcome.detail)
            else:
                return None, outcome
        return results, outcome

    def _not_segmented(self, item: Round, outcome: client.Outcome, why: str) -> None:
        """A round the service refused (or no model is meant for: ``why`` "skipped"), for
        good; or one to try again later."""
        if outcome.kind == "refused":
            skipped = why == "skipped"
            self.store.refused(item, f"skipped: {outcome.detail}" if skipped else outcome.detail)
            self.metrics.series.labels(why).inc()
            said = "skipped" if skipped else "refused by the service"
            log.warning("series %s %s: %s", item.name, said, outcome.detail)
        else:
            delay = outcome.retry_after or backoff(item.attempts)
            self.store.postpone(item, delay, outcome.detail)
            log.warning("series %s: %s; again in %.0f s", item.name, outcome.detail, delay)

    def send_due(self, name: str) -> None:
        """The deliveries due to destination ``name``."""
        destination = self.destinations[name]
        for delivery in self.store.due_deliveries(name):
            if self._stop.is_set():
                return
            try:
                outcome = client.send(
                    self.settings, destination, self.store.result_files(delivery.round), self.tls
                )
            except Exception as exc:  # an aborted association, a result gone: a failed try
                log.exception("sending to %s failed", destination.name)
                outcome = client.Outcome("retry", type(exc).__name__)
            series = delivery.round.name
            if outcome.kind == "ok":
                self.metrics.deliveries.labels(destination.name, "sent").inc()
                log.info("series %s sent to %s (%s)", series, destination.name, outcome.detail)
                if self.store.delivered(delivery):
                    self.metrics.series.labels("sent").inc()
            else:
                delay = backoff(delivery.attempts)
                self.metrics.deliveries.labels(destination.name, "failed").inc()
                self.store.delivery_failed(delivery, delay)
                log.warning(
                    "series %s to %s: %s; again in %.0f s",
                    series, destination.name, outcome.detail, delay,
                )  # fmt: skip
