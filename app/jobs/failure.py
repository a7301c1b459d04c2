"""What the client of a failed job reads as its ``error``: the exception's kind and
message, with nothing of the server in it -- no pixel data, no DICOM values, no path (the
input is named by the name the client gave, the job's folder as "the job's folder")."""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from app.jobs.store import Submission

ENOSPC = 28
# An absolute path left in a library's message: the name of its last part is all we show.
SERVER_PATH = re.compile(r"(?<![^\s'\"(\[=:,])(?:/[^/\s'\"]+){2,}/?")


def failure(exc: BaseException, request: Submission, folder: Path) -> str:
    """The error of the job of ``request``, whose files are in ``folder``, failed by ``exc``."""
    if isinstance(exc, OSError) and exc.errno == ENOSPC:
        return "the jobs volume is full (UNET_JOBS_DIR); free space and submit again"
    if isinstance(exc, OSError) and exc.filename is not None:
        reading = str(exc.filename).startswith(request.input)
        what = f"{request.name} could not be read" if reading else "a file of the job failed"
        return f"{what}: {exc.strerror or type(exc).__name__}"
    text = f"{type(exc).__name__}: {exc}"
    for path, name in ((request.input, request.name), (str(folder), "the job's folder")):
        text = text.replace(path, name)
    return SERVER_PATH.sub(lambda found: PurePath(found[0]).name, text)
