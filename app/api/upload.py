"""The request body: read under limits of size, time and shutdown, its images written as they come.

The one body and multipart reader, for /segment and /jobs (app/api/job_upload.py):
``receive_files`` writes a raw body whole, and each field ``file`` of a
multipart/form-data body, to a file its caller gives (python-multipart's
streaming parser; other fields are skipped, nothing is kept of them).

- Size: a declared Content-Length above UNET_MAX_UPLOAD_BYTES is refused before
  reading; any body (chunked included) as soon as it passes the limit (413).
- Time: a body that stalls UNET_BODY_TIMEOUT seconds without a byte is 408 and
  the connection closes, which frees its admission slot.
- Shutdown: a body still being read when SIGTERM comes is 503 (connection
  closed), so a client stalling its upload cannot hold up a graceful stop.
- Memory: /segment's images go to temporary files (TMPDIR) past SPOOL_BYTES,
  not to RAM; nine concurrent 60 MiB uploads hold a few MiB, and nothing of them
  stays in the process's heap once they are done.
- A client that disconnects while its work runs sets ``cancelled``: the work
  stops at its next tile batch (app/pipeline/small.py).

Runs on the event loop, the writes in a thread; only the inference thread reads the
spooled bytes.
"""

from __future__ import annotations

import asyncio
import email.message
import io
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.parser import BytesParser
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from app.errors import BadUploadError, BodyTimeoutError, BodyTooLargeError, UnavailableError
from app.service import LARGE_WORK
from app.settings import Settings

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

SPOOL_BYTES = 1 << 20  # an image of /segment above this goes to a temporary file
POLL_S = 0.25  # how often a waiting read looks at the shutdown flag
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


Opener = Callable[[str | None], IO[bytes]]
"""Where a body's image goes, given the client's file name (None: a raw body, or no name)."""


class _FileFields:
    """python-multipart's callbacks: the bytes of each field ``file`` for the file that
    ``open_file`` gives it, kept until ``write_pending`` (other fields are skipped)."""

    def __init__(self, open_file: Opener) -> None:
        self.open_file = open_file
        self.header, self.value, self.disposition = b"", b"", b""
        self.out: IO[bytes] | None = None  # the file of the part being read; None: skipped
        self.count = 0
        self.pending: list[tuple[IO[bytes], bytes]] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            # python-multipart caps a part's headers: 8, of 4224 bytes each (400 past it)
            "on_header_field": lambda d, s, e: setattr(self, "header", self.header + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "value", self.value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
        }

    def _begin(self) -> None:
        self.disposition, self.out = b"", None

    def _header_end(self) -> None:
        if self.header.lower() == b"content-disposition":
            self.disposition = self.value
        self.header, self.value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") == b"file":
            name = options.get(b"filename")
            self.out = self.open_file(name.decode("utf-8", "replace") if name else None)
            self.count += 1

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.out is not None:
            self.pending.append((self.out, data[start:end]))

    def write_pending(self) -> None:
        pending, self.pending = self.pending, []
        for out, data in pending:
            out.write(data)


async def receive_files(
    content_type: str, chunks: AsyncIterator[bytes], open_file: Opener, example: str
) -> None:
    """Write the body's images as the ``chunks`` come: a raw body whole to ``open_file(None)``;
    each field ``file`` of a multipart/form-data body, in order, to ``open_file(its file
    name)``, which may refuse one more (raise). ``example`` is the file name of the curl hint
    in the 400 for a form without a field ``file``. The writes run off the event loop."""
    if not content_type.lower().startswith("multipart/form-data"):
        out = open_file(None)
        async for chunk in chunks:
            await asyncio.to_thread(out.write, chunk)
        return
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadUploadError("malformed multipart body: no boundary in its Content-Type")
    fields = _FileFields(open_file)
    try:
        parser = MultipartParser(boundary, fields.callbacks())
        async for chunk in chunks:
            parser.write(chunk)
            if fields.pending:
                await asyncio.to_thread(fields.write_pending)
        parser.finalize()
    except FormParserError as exc:
        raise BadUploadError(f"malformed multipart body: {exc}") from None
    if parser.state != MultipartState.END:
        raise BadUploadError("malformed multipart body: it ends before its closing boundary")
    if not fields.count:
        raise BadUploadError(
            "the multipart body has no file field 'file': send it as "
            f"`curl -F file=@{example}`, or send the image as the raw body"
        )


def related_parts(content_type: str, spool: IO[bytes], max_parts: int) -> list[IO[bytes]]:
    """The parts of a ``multipart/related`` body (DICOMweb STOW-RS: one DICOM instance each),
    parsed by the standard library's MIME parser; each as a file. Its delimiters are
    counted first: 8 MiB of tiny parts would keep the parser busy for seconds."""
    body = spool.read()
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_boundary() or ""  # none: the parser says what is wrong below
    delimiter = b"\r\n--" + boundary.encode("latin-1")  # RFC 2046: CRLF, then --boundary
    found = body.count(delimiter) + body.startswith(delimiter[2:])  # the first may lead
    if boundary and found > max_parts + 1:
        raise BadUploadError(
            f"the multipart/related body has more than {max_parts} parts: the instances of "
            "one series (UNET_MAX_FRAMES)"
        )
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser().parsebytes(head + body)
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
    ``file`` (one, or several DICOM instances of one series; at most UNET_MAX_FRAMES); or
    the parts of a multipart/related body (STOW-RS)."""
    content_type = request.headers.get("content-type", "")
    files: list[IO[bytes]] = []

    def spool(_: str | None) -> IO[bytes]:
        if len(files) == settings.max_frames:
            raise BadUploadError(
                f"the multipart body has more than {settings.max_frames} fields 'file': "
                "one image, or the instances of one series (UNET_MAX_FRAMES)"
            )
        files.append(tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # noqa: SIM115 -- closed below
        return files[-1]

    chunks = body_chunks(
        request,
        settings.max_upload_bytes,
        f"UNET_MAX_UPLOAD_BYTES; {LARGE_WORK}",
        settings.body_timeout,
        stopping,
    )
    try:
        await receive_files(content_type, chunks, spool, "image.png")
        for file in files:
            file.seek(0)
        if content_type.lower().startswith("multipart/related"):
            # parsed in a thread: the event loop answers other requests meanwhile
            yield await asyncio.to_thread(
                related_parts, content_type, files[0], settings.max_frames
            )
        else:
            yield files
    finally:
        for file in files:
            file.close()


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
