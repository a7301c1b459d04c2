"""The images' entrypoint: uvicorn's own command line, exiting 0 after a graceful SIGTERM.

    python deploy/serve.py app.main:app --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 20

On SIGTERM uvicorn (>= 0.29) stops accepting, lets the requests in flight
finish (up to --timeout-graceful-shutdown), shuts the app down, and then
re-raises the signal with the handler that was installed before it started.
With the default handler the process then dies *by* SIGTERM (status 143 under
Docker) although it stopped cleanly. A handler that does nothing, installed
here first, turns that re-raise into a no-op, so a clean stop exits 0.
"""

from __future__ import annotations

import signal
from types import FrameType

from uvicorn.main import main


def _after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    """uvicorn replaces this while it serves; it runs only for uvicorn's final re-raise."""


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _after_graceful_shutdown)
    main()
