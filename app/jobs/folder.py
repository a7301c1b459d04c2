"""A job's folder and how a run of it ends early: its input and what a resumed run goes
on from are kept; everything else a stopped run wrote is cleared."""

from __future__ import annotations

from pathlib import Path

from app.pipeline.files import remove

INPUT = "input"  # an uploaded image, in the job's folder
RESUME = ".resume"  # a large job's store and ledger while it runs (kept over a restart)


class CancelledError(Exception):
    """DELETE /jobs/{id} while it ran: it stops at its next tile batch."""


class StoppingError(Exception):
    """The service is shutting down: the job goes back to the queue."""


def clear_outputs(folder: Path) -> None:
    """Everything in a job's folder but its input and what a resumed run goes on from (a
    partial or finished output)."""
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.name not in (INPUT, RESUME):
            remove(path)
