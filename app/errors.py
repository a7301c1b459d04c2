"""Exceptions -> HTTP status + ``{"detail": "<one string>"}``: the only place statuses are chosen.

The core (app.inference, app.codecs) raises domain exceptions that know
nothing of HTTP; the service layer adds a few of its own below. Every error
body is one string a person can act on, parameter validation included
(FastAPI's default is a list of objects).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.codecs.errors import (
    CodecError,
    CorruptImageError,
    DicomSegError,
    DicomSeriesError,
    EmptyInputError,
    FrameCountError,
    ImageTooLargeError,
    NotAnImageError,
    OptionError,
    UnsupportedFormatError,
    UnsupportedOutputError,
)
from app.inference.errors import ImageShapeError, InferenceError

log = logging.getLogger("app.errors")


class ServiceError(Exception):
    """Base of the errors raised by the HTTP layer itself."""

    def response_headers(self) -> dict[str, str]:
        """Headers the error response carries besides the JSON body."""
        return {}


class BadParameterError(ServiceError):
    """A query parameter out of the range that depends on the model (422)."""


class BodyTooLargeError(ServiceError):
    """The request body passed UNET_MAX_UPLOAD_BYTES while it was read (413)."""


class TooMuchWorkError(ServiceError):
    """The image would cost more network work than the service allows per request (413)."""


class BodyTimeoutError(ServiceError):
    """The request body stalled for UNET_BODY_TIMEOUT seconds (408); the connection closes."""

    def response_headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class RequestCancelledError(ServiceError):
    """The client went away: the work stopped at the next tile batch (logged as 499).

    tiles_done / tiles_total: how far the frame being segmented had come.
    """

    def __init__(self, message: str, tiles_done: int = 0, tiles_total: int = 0) -> None:
        super().__init__(message)
        self.tiles_done, self.tiles_total = tiles_done, tiles_total


class BadUploadError(ServiceError):
    """A multipart body without a usable ``file`` part (400)."""


class UnauthorizedError(ServiceError):
    """API keys are configured and the request has none or a wrong one (401)."""

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class UnavailableError(ServiceError):
    """Not ready, too many requests waiting, or shutting down (503); Retry-After in seconds."""

    def __init__(self, message: str, retry_after: int, close: bool = False) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.close = close

    def response_headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(self.retry_after)}
        return {**headers, "Connection": "close"} if self.close else headers


class SourceRefusedError(ServiceError):
    """A job's ``source`` outside UNET_JOB_SOURCE_ROOT, or any source when it is unset (403)."""


class SourceNotFoundError(ServiceError):
    """A job's ``source`` names nothing under UNET_JOB_SOURCE_ROOT (422)."""


class JobNotFoundError(ServiceError):
    """No job has this id (any more) (404)."""


class JobStateError(ServiceError):
    """The job is not in a state that allows this, e.g. its result before it succeeded (409)."""


class StorageFullError(ServiceError):
    """The jobs volume is (nearly) full: no new job, no more upload bytes (507)."""


class ErrorBody(BaseModel):
    """Every error response: one string a person can act on."""

    detail: str


# Most specific first: the first class an exception is an instance of decides.
STATUS: list[tuple[type[Exception], int]] = [
    (EmptyInputError, 400),
    (NotAnImageError, 400),
    (CorruptImageError, 400),
    (BadUploadError, 400),
    (UnauthorizedError, 401),
    (SourceRefusedError, 403),
    (JobNotFoundError, 404),
    (BodyTimeoutError, 408),
    (JobStateError, 409),
    (ImageTooLargeError, 413),
    (BodyTooLargeError, 413),
    (TooMuchWorkError, 413),
    (UnsupportedFormatError, 415),
    (UnsupportedOutputError, 415),
    (BadParameterError, 422),
    (FrameCountError, 422),
    (OptionError, 422),
    (ImageShapeError, 422),
    (DicomSegError, 422),
    (DicomSeriesError, 422),
    (SourceNotFoundError, 422),
    (UnavailableError, 503),
    (StorageFullError, 507),
    (RequestCancelledError, 499),
    (CodecError, 400),
    (InferenceError, 500),
]


def status_of(exc: Exception) -> int:
    """The HTTP status of a domain or service exception (500 when unknown)."""
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    if status == 500:  # a fault of ours (e.g. ONNX Runtime failed), not of the request
        log.error("request failed: %s: %s", type(exc).__name__, exc)
    headers = exc.response_headers() if isinstance(exc, ServiceError) else None
    return error_response(status, str(exc), headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else str(exc)
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    headers = exc.headers if isinstance(exc, StarletteHTTPException) else None
    return error_response(status, detail if isinstance(detail, str) else str(detail), headers)


QUOTE_CHARS = 100  # at most this much of a client's value goes back into a message


def quote(value: object) -> str:
    """``repr(value)``, cut to QUOTE_CHARS characters (a 60 KB query value is not echoed)."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text)} chars)"


def _where(loc: tuple[int | str, ...]) -> str:
    # ("query", "threshold") -> "query parameter 'threshold'"
    if len(loc) >= 2 and loc[0] in ("query", "header", "path", "cookie"):
        return f"{loc[0]} parameter '{'.'.join(str(p) for p in loc[1:])}'"
    return ".".join(str(p) for p in loc) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = []
    for err in errors:
        given = f" (got {quote(err['input'])})" if err.get("input") is not None else ""
        problems.append(f"{_where(tuple(err.get('loc', ())))}: {err.get('msg', 'invalid')}{given}")
    return error_response(422, "; ".join(problems) or "invalid request")


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into ``{"detail": str}`` responses."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in (ServiceError, CodecError, InferenceError):
        app.add_exception_handler(cls, _domain_error)
