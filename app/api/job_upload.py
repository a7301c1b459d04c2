"""What a job is given: the body streamed to disk (the raw body, or the multipart field
``file``), or a JSON ``{"source": ...}`` naming a file under UNET_JOB_SOURCE_ROOT or a
DICOMweb series under UNET_JOB_SOURCE_URLS (fetched into the job's folder before the
answer, app/pipeline/dicomweb.py, up to UNET_JOB_MAX_BYTES); and whether there is room
for one more job (503: too many; 507: the volume is nearly full).

Never in memory and never twice on disk: the body is parsed as it comes by
/segment's reader (app/api/upload.py) and only the bytes of ``file`` are
written. Limits as for /segment: UNET_JOB_MAX_BYTES for the
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
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from starlette.requests import Request

from app.api.upload import body_chunks, receive_files
from app.errors import BadUploadError, StorageFullError, UnavailableError
from app.jobs.folder import INPUT
from app.jobs.inputs import allowed_series, resolve_source
from app.jobs.runner import JobRunner
from app.pipeline.dicomweb import SeriesUrl, fetch
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


async def _watching_space(chunks: AsyncIterator[bytes], settings: Settings) -> AsyncIterator[bytes]:
    """The body's chunks; after every CHECK_EVERY bytes, a look at the free space (507)."""
    received, checked = 0, 0
    async for chunk in chunks:
        yield chunk  # written when the next is asked for
        received += len(chunk)
        if received - checked >= CHECK_EVERY:
            check_free(settings)
            checked = received


async def receive_to_file(
    request: Request, path: Path, settings: Settings, stopping: threading.Event
) -> str | None:
    """Write the image of the body (the raw body, or its one multipart field ``file``) to
    ``path``; the client's file name, if it gave one. On any failure ``path`` is removed."""
    chunks = body_chunks(
        request, settings.job_max_bytes, "UNET_JOB_MAX_BYTES", settings.body_timeout, stopping
    )
    content_type = request.headers.get("content-type", "")
    filenames: list[str | None] = []
    try:
        with path.open("wb") as out:

            def one_image(filename: str | None) -> IO[bytes]:
                if filenames:
                    raise BadUploadError("a job takes one image: one multipart field 'file'")
                filenames.append(filename)
                return out

            await receive_files(
                content_type, _watching_space(chunks, settings), one_image, "image.tif"
            )
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno == ENOSPC:
            raise StorageFullError("the jobs volume is full (UNET_JOBS_DIR)") from None
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return filenames[0]


async def read_source(request: Request, service: Service) -> str:
    """What a JSON body ``{"source": "<path under UNET_JOB_SOURCE_ROOT>"}`` names."""
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
    return str(given["source"])


async def receive_input(
    request: Request, service: Service, runner: JobRunner, job_id: str
) -> tuple[Path, str]:
    """The job's input and its name: a source, or the body written to the job's folder."""
    settings = service.settings
    if request.headers.get("content-type", "").lower().startswith("application/json"):
        source = await read_source(request, service)
        series = SeriesUrl.parse(source)
        if series is None:
            path = resolve_source(settings.job_source_root, source)
            return path, safe_name(path.name)
        allowed_series(settings.job_source_urls, series)
        folder = runner.store.folder(job_id)
        folder.mkdir()
        path = folder / INPUT  # a folder of the series' instances: kept on a restart
        token, most = settings.dicomweb_token, settings.job_max_bytes
        check_free(settings)  # and after each instance: a series can be gigabytes
        try:
            await asyncio.to_thread(
                fetch, series, path, token=token, max_bytes=most,
                progress=lambda done, total: check_free(settings),
            )  # fmt: skip
        except OSError as exc:
            if exc.errno == ENOSPC:
                raise StorageFullError("the jobs volume is full (UNET_JOBS_DIR)") from None
            raise
        return path, f"{series.series}.dicomweb"  # the result: <series UID>.<ext>
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
