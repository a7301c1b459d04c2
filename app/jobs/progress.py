"""A running job's progress: its tiles done of its total and its stage, in memory (the job's
row has them once it ends), and the count of tiles over its consecutive tile runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Live:
    """The running job's progress, in memory (the row has it once the job ends)."""

    total: int
    done: int = 0
    stage: str = "tiles"  # then, for large images: objects, outlines, levels (the pyramid)
    began: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    resumed: int = 0  # tiles a run before this one had done

    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before the first batch."""
        ran = self.done - self.resumed
        if ran <= 0:
            return None
        return (time.monotonic() - self.began) / ran * max(self.total - self.done, 0)


class TileCounter:
    """Tiles done over a job's consecutive tile runs (frames, blocks, flips), each reported
    as ``(done, total)`` from 1 up to its total, as the tiler does."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.report, self.base, self.done, self.total = report, 0, 0, 0

    def __call__(self, done: int, total: int) -> None:
        if self.total and self.done == self.total:  # the previous run ended: a new one
            self.base += self.total
        self.done, self.total = done, total
        self.report(self.base + done)
