"""Bounded admission: one pipeline at a time, a bounded queue, 503 beyond it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from time import perf_counter
from typing import TypeVar

from app.errors import UnavailableError
from app.jobs.gate import Gate
from app.metrics import Metrics

T = TypeVar("T")


class Admission:
    """One pipeline at a time (one inference already uses every core), max_queue waiting.

    A request reserves a slot before its body is read, so at most
    1 + max_queue requests are admitted at once (their bodies spooled to disk,
    app/api/upload.py); a request that finds every slot taken gets
    UnavailableError (503) with a Retry-After of about one pipeline duration,
    instead of growing memory. A slot frees when the work ends, when the body
    is refused or times out, or when the client leaves (the work stops at its
    next tile batch). The work runs in a single worker thread, off the event
    loop, ahead of job tiles (``gate``: a running job pauses between its tile
    batches). Counters are touched on the event loop only.
    """

    def __init__(self, max_queue: int, metrics: Metrics, gate: Gate) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
        self.gate = gate
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet-inference")
        self.admitted = 0  # slots taken: running + waiting (+ bodies being read)
        self.mean_s = 1.0  # moving average of a pipeline's duration, for Retry-After

    def release(self, seconds: float | None) -> None:
        self.admitted -= 1
        if seconds is not None:
            self.mean_s = 0.8 * self.mean_s + 0.2 * seconds
        self.metrics.queued.set(max(self.admitted - 1, 0))

    @contextmanager
    def reserve(self) -> Iterator[Ticket]:
        """A slot for one request, or 503 when 1 + max_queue are taken."""
        if self.admitted > self.max_queue:
            raise UnavailableError(
                f"overloaded: {self.admitted - 1} requests already wait for the model "
                f"(UNET_MAX_QUEUE={self.max_queue}); retry later",
                math.ceil(self.mean_s),
            )
        self.admitted += 1
        self.metrics.queued.set(max(self.admitted - 1, 0))
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            if not ticket.submitted:  # e.g. the body was refused: free the slot now
                self.release(None)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class Ticket:
    """A reserved slot; ``run`` hands the work to the inference thread (once)."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.submitted = False

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in the inference thread; the slot is freed when it ends."""
        if self.submitted:
            raise RuntimeError("a ticket runs one piece of work")
        loop = asyncio.get_running_loop()
        gate = self.admission.gate

        def timed() -> tuple[T, float]:
            gate.wait_turn()  # at most the job batch in flight
            start = perf_counter()
            return work(), perf_counter() - start

        gate.arrive()
        try:
            future = self.admission.executor.submit(timed)
        except BaseException:
            gate.leave()
            raise
        self.submitted = True

        def done(f: Future[tuple[T, float]]) -> None:
            # Freed when the work ends, even if the client went away (cancelling
            # the await does not stop a running inference).
            gate.leave()
            seconds = None if f.cancelled() or f.exception() else f.result()[1]
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.admission.release, seconds)

        future.add_done_callback(done)
        result, _ = await asyncio.wrap_future(future)
        return result
