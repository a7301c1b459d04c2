"""Per-request bookkeeping as pure ASGI middleware (no body buffering, streaming intact).

For every HTTP request: an ``X-Request-ID`` (the client's when sane, else a
new one) on every response, errors included; the request metrics; one log
line (request id, method, route, status, bytes in/out, duration, and what the
route adds in ``request.state.log``: image size, stage timings -- never
content); and a JSON 500 for an unexpected exception instead of a bare one.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from time import perf_counter
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics

log = logging.getLogger("app.requests")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


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
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        info: dict[str, Any] = {"status": 500, "bytes_in": 0, "bytes_out": 0, "started": False}
        start = perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            info["bytes_in"] += len(message.get("body", b""))
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"], info["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, tagged_send)
        except ClientDisconnect:
            info["status"] = 499  # nginx's "client closed request"; nothing can be sent
        except Exception:
            log.exception("unexpected error (request %s)", rid)
            if not info["started"]:
                await _internal_error(tagged_send, rid)
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


async def _internal_error(send: Send, rid: str) -> None:
    body = json.dumps({"detail": f"internal error; quote request id {rid} to the operator"})
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
