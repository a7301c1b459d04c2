"""The request body: read under limits of size, time and shutdown, spooled to disk, the image found.

- Size: a declared Content-Length above UNET_MAX_UPLOAD_BYTES is refused before
  reading; any body (chunked included) as soon as it passes the limit (413).
- Time: a body that stalls UNET_BODY_TIMEOUT seconds without a byte is 408 and
  the connection closes, which frees its admission slot.
- Shutdown: a body still being read when SIGTERM comes is 503 (connection
  closed), so a client stalling its upload cannot hold up a graceful stop.
- Memory: the bytes go to a temporary file (TMPDIR) past SPOOL_BYTES, not to
  RAM; nine concurrent 60 MiB uploads hold a few MiB, and nothing of them stays
  in the process's heap once they are done.
- A client that disconnects while its work runs sets ``cancelled``: the work
  stops at its next tile batch (app/pipeline/small.py).

Runs on the event loop; only the inference thread reads the spooled bytes.
"""

from __future__ import annotations

import asyncio
import email.message
import io
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from email.parser import BytesParser
from typing import IO

from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from app.errors import BadUploadError, BodyTimeoutError, BodyTooLargeError, UnavailableError
from app.service import LARGE_WORK
from app.settings import Settings

SPOOL_BYTES = 1 << 20  # bodies above this go to a temporary file
POLL_S = 0.25  # how often a waiting read looks at the shutdown flag
CHUNK = 1 << 16
SHUTDOWN_RETRY_S = 5


async def _next_message(receive: Receive, timeout_s: float, stopping: threading.Event) -> Message:
    """The next ASGI message of the body; 408 after ``timeout_s`` without one, 503 on shutdown."""
    pending = asyncio.ensure_future(receive())
    waited = 0.0
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=POLL_S)
            if done:
                return pending.result()
            waited += POLL_S
            if stopping.is_set():
                raise UnavailableError(
                    "the service is shutting down; send the request again",
                    SHUTDOWN_RETRY_S,
                    close=True,
                )
            if waited >= timeout_s:
                raise BodyTimeoutError(
                    f"the request body stalled: no byte for {timeout_s:g} s (UNET_BODY_TIMEOUT)"
                )
    finally:
        if not pending.done():
            pending.cancel()


async def body_chunks(
    request: Request, limit: int, setting: str, timeout_s: float, stopping: threading.Event
) -> AsyncIterator[bytes]:
    """The body's bytes as they come, under ``limit`` bytes (413 naming ``setting``), 408
    after ``timeout_s`` without a byte, 503 on shutdown; ClientDisconnect if the client goes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the body is {declared} bytes, the limit is {limit} ({setting})")
    size, more = 0, True
    while more:
        message = await _next_message(request.receive, timeout_s, stopping)
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the body passed {limit} bytes, the limit ({setting})")
        more = message.get("more_body", False)
        if chunk:
            yield chunk


async def read_body(request: Request, settings: Settings, stopping: threading.Event) -> IO[bytes]:
    """The whole body in a spooled temporary file (rewound); the caller closes it."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 -- returned
    try:
        chunks = body_chunks(
            request,
            settings.max_upload_bytes,
            f"UNET_MAX_UPLOAD_BYTES; {LARGE_WORK}",
            settings.body_timeout,
            stopping,
        )
        async for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


async def _chunks(spool: IO[bytes]) -> AsyncGenerator[bytes, None]:
    while chunk := spool.read(CHUNK):
        yield chunk


def related_parts(content_type: str, spool: IO[bytes]) -> list[IO[bytes]]:
    """The parts of a ``multipart/related`` body (DICOMweb STOW-RS: one DICOM instance each),
    parsed by the standard library's MIME parser; each as a file."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser().parsebytes(head + spool.read())
    parts = message.get_payload() if message.is_multipart() else None
    if not isinstance(parts, list) or not parts:
        raise BadUploadError(
            "malformed multipart/related body: no parts (STOW-RS: one application/dicom part "
            "per instance, with the boundary of the Content-Type)"
        )
    files: list[IO[bytes]] = []
    for part in parts:
        data = part.get_payload(decode=True) if isinstance(part, email.message.Message) else None
        files.append(io.BytesIO(data if isinstance(data, bytes) else b""))
    return files


@asynccontextmanager
async def received_images(
    request: Request, settings: Settings, stopping: threading.Event
) -> AsyncIterator[list[IO[bytes]]]:
    """The images of the request as files: the raw body; the multipart/form-data fields
    ``file`` (one, or several DICOM instances of one series); or the parts of a
    multipart/related body (STOW-RS)."""
    spool = await read_body(request, settings, stopping)
    try:
        content_type = request.headers.get("content-type", "")
        kind = content_type.lower()
        if kind.startswith("multipart/related"):
            yield related_parts(content_type, spool)
            return
        if not kind.startswith("multipart/form-data"):
            yield [spool]
            return
        parser = MultiPartParser(
            Headers(scope=request.scope),
            _chunks(spool),
            max_files=settings.max_frames,
            max_fields=8,
        )
        try:
            form = await parser.parse()
        except (MultiPartException, StarletteHTTPException) as exc:
            detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
            raise BadUploadError(f"malformed multipart body: {detail}") from None
        try:
            uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
            if not uploads:
                raise BadUploadError(
                    "the multipart body has no file field 'file': send it as "
                    "`curl -F file=@image.png`, or send the image as the raw body"
                )
            for upload in uploads:
                await upload.seek(0)
            yield [upload.file for upload in uploads]
        finally:
            await form.close()
    finally:
        spool.close()


@asynccontextmanager
async def watching_disconnect(request: Request) -> AsyncIterator[threading.Event]:
    """An Event set when the client disconnects while the block runs (its body already read).

    Also set when the block ends: if it ends early (the server cancelled the request
    at the end of its graceful shutdown), work still running stops at its next batch.
    """
    cancelled = threading.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancelled.set()

    task = asyncio.create_task(watch())
    try:
        yield cancelled
    finally:
        task.cancel()
        cancelled.set()
