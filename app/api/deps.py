"""What routes depend on: the loaded service, bounded admission, the API-key check.

The heavy resources are made in the lifespan (app/main.py) and reach the
routes through ``Annotated`` dependencies (ServiceDep, Authorized).
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import UnauthorizedError, UnavailableError
from app.inference import LoadedModel, Predictor
from app.metrics import Metrics
from app.settings import Settings

T = TypeVar("T")
NOT_READY_RETRY_S = 5


class Admission:
    """One pipeline at a time (one inference already uses every core), max_queue waiting.

    A request reserves a slot before its body is read, so at most
    1 + max_queue bodies are held at once; a request that finds every slot
    taken gets UnavailableError (503) with a Retry-After of about one pipeline
    duration, instead of growing memory. The work runs in a single worker
    thread, off the event loop. Counters are touched on the event loop only.
    """

    def __init__(self, max_queue: int, metrics: Metrics) -> None:
        self.max_queue = max_queue
        self.metrics = metrics
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

        def timed() -> tuple[T, float]:
            start = perf_counter()
            return work(), perf_counter() - start

        future = self.admission.executor.submit(timed)
        self.submitted = True

        def done(f: Future[tuple[T, float]]) -> None:
            # Freed when the work ends, even if the client went away (cancelling
            # the await does not stop a running inference).
            seconds = None if f.cancelled() or f.exception() else f.result()[1]
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.admission.release, seconds)

        future.add_done_callback(done)
        result, _ = await asyncio.wrap_future(future)
        return result


@dataclass
class Service:
    """Everything a request needs, made once in the lifespan."""

    settings: Settings
    model: LoadedModel
    predictor: Predictor
    admission: Admission
    metrics: Metrics
    ready: bool = False
    tiling: tuple[int, int] = field(default=(0, 0))


def get_service(request: Request) -> Service:
    """The ready service, or 503 (the model is still loading or warming up)."""
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        raise UnavailableError(
            "not ready: the model is still loading; retry shortly", NOT_READY_RETRY_S
        )
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

_bearer = HTTPBearer(auto_error=False, description="an API key from UNET_API_KEYS")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key from UNET_API_KEYS"
)


def key_matches(given: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    if not given:
        return False
    candidate = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key.encode())
    return found


def require_api_key(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """401 unless UNET_API_KEYS is empty or the request carries one of its keys."""
    keys = service.settings.api_keys
    if not keys:
        return
    token = bearer.credentials if bearer is not None else None
    if key_matches(token, keys) or key_matches(api_key, keys):
        return
    raise UnauthorizedError(
        "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
    )


Authorized = Depends(require_api_key)
