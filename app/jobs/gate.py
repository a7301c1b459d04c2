"""One engine for both: interactive requests go first, jobs run tile batches in between.

``POST /segment`` work registers when it is handed to the inference thread
(``arrive``), waits for a job batch in flight to end (``wait_turn``), and
deregisters when it ends (``leave``). A job runs each tile batch through
``job_batch``, which waits until no interactive work is registered. So a
request that arrives while a job runs waits for at most the one batch in
flight, and jobs use the engine whenever no request does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.5  # how often a job waiting for its turn looks whether it should stop


class Gate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._interactive = 0  # requests handed to the inference thread, not yet finished
        self._job_batch = False  # a job's tile batch is running

    def arrive(self) -> None:
        """An interactive request is on its way (jobs pause before their next batch)."""
        with self._cond:
            self._interactive += 1

    def wait_turn(self) -> None:
        """In the inference thread: until the job batch in flight (if any) has ended."""
        with self._cond:
            self._cond.wait_for(lambda: not self._job_batch)

    def leave(self) -> None:
        with self._cond:
            self._interactive -= 1
            self._cond.notify_all()

    def job_batch(self, run: Callable[[], T], check: Callable[[], None]) -> T:
        """``run()`` once no interactive request is registered and no other batch runs (a
        job's, or a model's warm-up at a hot reload); ``check()`` (which may raise: a
        cancelled job, a shutdown) before it and every POLL_S while waiting."""

        def free() -> bool:
            return self._interactive == 0 and not self._job_batch

        with self._cond:
            while True:
                check()
                if self._cond.wait_for(free, timeout=POLL_S):
                    break
            self._job_batch = True
        try:
            check()
            return run()
        finally:
            with self._cond:
                self._job_batch = False
                self._cond.notify_all()
