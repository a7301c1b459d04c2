"""Exceptions -> HTTP status + ``{"detail": "<one string>"}``: the only place statuses are chosen.

The core (app.inference, app.codecs) and the service (app.errors) raise exceptions that
know nothing of HTTP; this module maps each to its status and registers the handlers.
Every error body is one string a person can act on, parameter validation included
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
from app.errors import (
    BadParameterError,
    BadUploadError,
    BodyTimeoutError,
    BodyTooLargeError,
    JobNotFoundError,
    JobStateError,
    ModelNotFoundError,
    RequestCancelledError,
    ServiceError,
    SourceFetchError,
    SourceNotFoundError,
    SourceRefusedError,
    StorageFullError,
    TooMuchWorkError,
    UnauthorizedError,
    UnavailableError,
    quote,
)
from app.inference.errors import ImageShapeError, InferenceError

log = logging.getLogger("app.errors")


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
    (ModelNotFoundError, 404),
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
    (SourceFetchError, 502),
    (UnavailableError, 503),
    (StorageFullError, 507),
    (RequestCancelledError, 499),
    (CodecError, 400),
    (InferenceError, 500),
]


def documented(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` of error statuses, each an ErrorBody with its description."""
    return {
        status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()
    }


def status_of(exc: Exception) -> int:
    """The HTTP status of a domain or service exception (500 when unknown)."""
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None, key: str = "detail"
) -> JSONResponse:
    return JSONResponse({key: detail}, status_code=status, headers=dict(headers or {}))


def error_key(path: str) -> str:
    """The error body's field: the Open Inference Protocol's ``error`` under /v2, else
    ``detail``."""
    return "error" if path == "/v2" or path.startswith("/v2/") else "detail"


def _key(request: Request) -> str:
    return error_key(request.url.path)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    if status == 500:  # a fault of ours (e.g. ONNX Runtime failed), not of the request
        log.error("request failed: %s: %s", type(exc).__name__, exc)
    headers = exc.response_headers() if isinstance(exc, ServiceError) else None
    return error_response(status, str(exc), headers, _key(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else str(exc)
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    headers = exc.headers if isinstance(exc, StarletteHTTPException) else None
    text = detail if isinstance(detail, str) else str(detail)
    return error_response(status, text, headers, _key(request))


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
    return error_response(422, "; ".join(problems) or "invalid request", key=_key(request))


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into ``{"detail": str}`` responses."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in (ServiceError, CodecError, InferenceError):
        app.add_exception_handler(cls, _domain_error)
