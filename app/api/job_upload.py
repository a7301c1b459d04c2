"""What a job is given: the body streamed to disk (the raw body, or the multipart field
``file``), or a JSON ``{"source": ...}`` naming a file under UNET_JOB_SOURCE_ROOT; and
whether there is room for one more job (503: too many; 507: the volume is nearly full).

Never in memory and never twice on disk: the multipart body is parsed as it
comes (python-multipart's streaming parser) and only the bytes of ``file`` are
written. Limits as for /segment (app/api/upload.py): UNET_JOB_MAX_BYTES for the
whole body, UNET_BODY_TIMEOUT without a byte, 503 on shutdown; and the jobs
volume's free space, checked as the bytes come (507 below UNET_JOB_MIN_FREE_BYTES).
Whatever goes wrong, the partial file is removed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from app.api.upload import body_chunks
from app.errors import BadUploadError, StorageFullError, UnavailableError
from app.jobs.inputs import resolve_source
from app.jobs.runner import INPUT, JobRunner
from app.service import Service
from app.settings import Settings

SOURCE_BYTES = 64 << 10  # the largest JSON body {"source": ...}
BUSY_RETRY_S = 30
CHECK_EVERY = 1 << 20  # bytes written between two looks at the free space (a statvfs)
ENOSPC = 28


def check_free(settings: Settings, more: int = 0) -> None:
    """507 when the jobs volume has less than UNET_JOB_MIN_FREE_BYTES free (after ``more``)."""
    free = shutil.disk_usage(settings.jobs_dir).free
    if free - more < settings.job_min_free_bytes:
        raise StorageFullError(
            f"the jobs volume is nearly full: {free} bytes free, {more} more asked, "
            f"{settings.job_min_free_bytes} kept free (UNET_JOB_MIN_FREE_BYTES); retry later"
        )


class FilePart:
    """Callbacks of python-multipart that keep the bytes of the field ``file``."""

    def __init__(self) -> None:
        self.header, self.value, self.disposition = b"", b"", b""
        self.keeping, self.found = False, False
        self.filename: str | None = None
        self.pending: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            # python-multipart caps a part's header at 4224 bytes (400 past it)
            "on_header_field": lambda d, s, e: setattr(self, "header", self.header + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "value", self.value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": lambda: setattr(self, "keeping", False),
        }

    def _begin(self) -> None:
        self.disposition, self.keeping = b"", False

    def _header_end(self) -> None:
        if self.header.lower() == b"content-disposition":
            self.disposition = self.value
        self.header, self.value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") != b"file":
            return
        if self.found:
            raise BadUploadError("a job takes one image: one multipart field 'file'")
        self.found = self.keeping = True
        name = options.get(b"filename")
        self.filename = name.decode("utf-8", "replace") if name else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.keeping:
            self.pending.append(data[start:end])

    def take(self) -> bytes:
        data, self.pending = b"".join(self.pending), []
        return data


async def _write(out: IO[bytes], data: bytes) -> None:
    if data:
        await asyncio.to_thread(out.write, data)


async def receive_to_file(
    request: Request, path: Path, settings: Settings, stopping: threading.Event
) -> str | None:
    """Write the image of the body to ``path``; the client's file name, if it gave one."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.lower().startswith("multipart/form-data")
    part, parser = FilePart(), None
    if multipart:
        boundary = parse_options_header(content_type)[1].get(b"boundary")
        if not boundary:
            raise BadUploadError("malformed multipart body: no boundary in its Content-Type")
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    chunks = body_chunks(
        request, settings.job_max_bytes, "UNET_JOB_MAX_BYTES", settings.body_timeout, stopping
    )
    written, checked = 0, 0
    try:
        with path.open("wb") as out:
            async for chunk in chunks:
                if parser is not None:
                    parser.write(chunk)
                    chunk = part.take()
                await _write(out, chunk)
                written += len(chunk)
                if written - checked >= CHECK_EVERY:
                    check_free(settings)
                    checked = written
            if parser is not None:
                parser.finalize()
                if parser.state != MultipartState.END:
                    raise BadUploadError(
                        "malformed multipart body: it ends before its closing boundary"
                    )
                await _write(out, part.take())
    except FormParserError as exc:
        path.unlink(missing_ok=True)
        raise BadUploadError(f"malformed multipart body: {exc}") from None
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno == ENOSPC:
            raise StorageFullError("the jobs volume is full (UNET_JOBS_DIR)") from None
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if multipart and not part.found:
        path.unlink(missing_ok=True)
        raise BadUploadError(
            "the multipart body has no file field 'file': send it as "
            "`curl -F file=@image.tif`, or send the image as the raw body"
        )
    return part.filename


async def read_source(request: Request, service: Service) -> Path:
    """The file a JSON body ``{"source": "<path under UNET_JOB_SOURCE_ROOT>"}`` names."""
    settings = service.settings
    chunks = body_chunks(
        request, SOURCE_BYTES, "a JSON body naming a source", settings.body_timeout,
        service.stopping,
    )  # fmt: skip
    body = b"".join([chunk async for chunk in chunks])
    try:
        given = json.loads(body)
    except (ValueError, RecursionError):
        raise BadUploadError('the JSON body is not JSON: send {"source": "<path>"}') from None
    if not isinstance(given, dict) or not isinstance(given.get("source"), str):
        raise BadUploadError('the JSON body must be {"source": "<path under the source root>"}')
    return resolve_source(settings.job_source_root, given["source"])


async def receive_input(
    request: Request, service: Service, runner: JobRunner, job_id: str
) -> tuple[Path, str]:
    """The job's input and its name: a source, or the body written to the job's folder."""
    if request.headers.get("content-type", "").lower().startswith("application/json"):
        path = await read_source(request, service)
        return path, safe_name(path.name)
    upload = runner.store.upload(job_id)
    filename = await receive_to_file(request, upload, service.settings, service.stopping)
    folder = runner.store.folder(job_id)
    folder.mkdir()
    path = folder / INPUT
    upload.replace(path)
    return path, safe_name(filename)


def safe_name(filename: str | None) -> str:
    """A client's file name as the stem of the result's name: letters, digits, ``._-``."""
    kept = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "").name).lstrip(".")
    return kept[:200] or "image"


@contextmanager
def admitted(request: Request, service: Service, runner: JobRunner) -> Iterator[None]:
    """A place for one more job while it is submitted (its body received, its input
    checked, its row added): 503 when UNET_JOB_MAX_QUEUE jobs are queued, running or being
    submitted; 507 when the declared body would leave less than UNET_JOB_MIN_FREE_BYTES."""
    counts = runner.store.counts()
    unfinished = counts["queued"] + counts["running"] + runner.submitting
    limit = service.settings.job_max_queue
    if unfinished >= limit:
        raise UnavailableError(
            f"{unfinished} jobs are queued, running or being submitted "
            f"(UNET_JOB_MAX_QUEUE={limit}); retry later",
            BUSY_RETRY_S,
        )
    declared = request.headers.get("content-length", "")
    check_free(service.settings, int(declared) if declared.isdigit() else 0)
    runner.submitting += 1
    try:
        yield
    finally:
        runner.submitting -= 1
