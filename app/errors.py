"""The service's own exceptions, beside the core's (app.codecs.errors, app.inference.errors):
what goes wrong with a request, a body, a job or the service's state, framework-free, so
that the command line, the jobs runner and Dask workers raise them without importing any
web framework. Their HTTP statuses are chosen in one place: app/api/errors.py.
"""

from __future__ import annotations


class StartupError(Exception):
    """Start-up cannot go on; the message is the one log line."""


class ServiceError(Exception):
    """Base of the errors the service raises itself (the core has its own bases)."""

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


class SourceFetchError(ServiceError):
    """A DICOMweb series (a job's ``source``, an input of the command line) that cannot be
    fetched: its server refused, failed or could not be reached (502)."""


class SourceNotFoundError(ServiceError):
    """A job's ``source`` names nothing under UNET_JOB_SOURCE_ROOT (422)."""


class SourceUrlError(SourceNotFoundError, ValueError):
    """A DICOMweb series URL whose host or port is not one (422; the command line's bad
    argument, exit 2)."""


class ModelNotFoundError(ServiceError):
    """A path names a model the repository has not (404; /segment's model= is a 422)."""


class JobNotFoundError(ServiceError):
    """No job has this id (any more) (404)."""


class JobStateError(ServiceError):
    """The job is not in a state that allows this, e.g. its result before it succeeded (409)."""


class StorageFullError(ServiceError):
    """The jobs volume is (nearly) full: no new job, no more upload bytes (507)."""


QUOTE_CHARS = 100  # at most this much of a client's value goes back into a message


def quote(value: object) -> str:
    """``repr(value)``, cut to QUOTE_CHARS characters (a 60 KB query value is not echoed)."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text)} chars)"
