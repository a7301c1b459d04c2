"""Per-request bookkeeping as pure ASGI middleware (no body buffering, streaming intact).

For every HTTP request: an ``X-Request-ID`` (the client's when sane, else a
new one) on every response, errors included; the request metrics; one log
line (request id, method, route, status, bytes in/out, duration, and what the
route adds in ``request.state.log``: image size, stage timings -- never
content); and a JSON 500 for an unexpected exception instead of a bare one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from time import perf_counter
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_key
from app.metrics import Metrics

log = logging.getLogger("app.requests")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
# Header lines per request; the header block's size is bounded by the HTTP server
# (h11: 16 KiB, answered 400).
MAX_HEADERS = 100


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is 1-128 safe characters, else a new UUID4 hex."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            given = str(value.decode("latin-1"))
            if _SANE_ID.match(given):
                return given
    return uuid.uuid4().hex


def endpoint_of(scope: Scope) -> str:
    """The matched route's template (bounded metric labels), else ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else "unmatched"


class RequestContext:
    """X-Request-ID, metrics, one log line and a JSON 500 for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, path = request_id(scope), str(scope.get("path", ""))
        scope.setdefault("state", {})["request_id"] = rid
        if len(scope.get("headers", [])) > MAX_HEADERS:
            await _error(send, rid, 431, f"more than {MAX_HEADERS} header lines")
            self._finish(scope, rid, {"status": 431, "bytes_in": 0, "bytes_out": 0}, 0.0)
            return
        info: dict[str, Any] = {"status": 500, "bytes_in": 0, "bytes_out": 0, "started": False}
        start = perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            info["bytes_in"] += len(message.get("body", b""))
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"], info["started"] = message["status"], True
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):  # _error's
                    headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, tagged_send)
        except ClientDisconnect:
            info["status"] = 499  # nginx's "client closed request"; nothing can be sent
        except asyncio.CancelledError:  # cut off by the server (shutdown past its grace period)
            if not info["started"]:
                await _error(
                    tagged_send, rid, 503, "the service stopped; send the request again", path
                )
            raise
        except Exception:
            log.exception("unexpected error (request %s)", rid)
            if not info["started"]:
                await _error(tagged_send, rid, 500, f"internal error; quote request id {rid}", path)
        finally:
            self.metrics.in_flight.dec()
            self._finish(scope, rid, info, perf_counter() - start)

    def _finish(self, scope: Scope, rid: str, info: dict[str, Any], seconds: float) -> None:
        endpoint = endpoint_of(scope)
        self.metrics.requests.labels(endpoint, str(info["status"])).inc()
        self.metrics.request_duration.labels(endpoint).observe(seconds)
        extra = scope.get("state", {}).get("log", {})
        fields = {
            "request_id": rid,
            "method": scope["method"],
            "route": endpoint,
            "status": info["status"],
            "bytes_in": info["bytes_in"],
            "bytes_out": info["bytes_out"],
            "duration_ms": round(seconds * 1000, 1),
            **extra,
        }
        log.info("%s %s %s", scope["method"], endpoint, info["status"], extra={"fields": fields})


async def _error(send: Send, rid: str, status: int, detail: str, path: str = "") -> None:
    """A JSON error response sent from the middleware itself (nothing else could answer)."""
    body = json.dumps({error_key(path): detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Cors:
    """CORS for the origins of UNET_CORS_ORIGINS (known once the lifespan has read the settings).

    Unset: no CORS at all (a browser on another origin is refused by the browser,
    a preflight gets 405). Set: starlette's CORSMiddleware with those origins.
    """

    EXPOSE = ("X-Request-ID", "Server-Timing", "Retry-After", "X-Object-Count")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors: ASGIApp | None = None
        self.origins: tuple[str, ...] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = getattr(scope["app"].state, "service", None) if "app" in scope else None
        origins = service.settings.cors_origins if service is not None else ()
        if scope["type"] != "http" or not origins:
            await self.app(scope, receive, send)
            return
        if self.cors is None or origins != self.origins:
            self.origins = origins
            self.cors = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                expose_headers=list(self.EXPOSE),
                max_age=600,
            )
        await self.cors(scope, receive, send)
