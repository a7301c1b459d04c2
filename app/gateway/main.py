"""``unet-dicom-gateway``: settings, the store, the DICOM listener, the two workers and the
small HTTP listener (/health/live, /health/ready, /metrics); SIGTERM stops it cleanly.
``--check`` asks the service's readiness and C-ECHOes every destination, exit 0 or 1.

Exit statuses: 0 stopped (or every check passed), 1 a check failed, 3 a bad setting or a
port that cannot be opened (one log line, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from app.gateway import client
from app.gateway.metrics import Metrics
from app.gateway.receiver import Receiver
from app.gateway.settings import GatewaySettings
from app.gateway.store import GatewayStore
from app.gateway.worker import Worker
from app.logging import configure_logging

log = logging.getLogger("app.gateway")


def tls_contexts(settings: GatewaySettings) -> tuple[Any, Any]:
    """(server context, client context) for DICOM TLS, or (None, None) when not set.
    With a CA, the listener requires client certificates signed by it and the client
    verifies the destinations against it."""
    if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
        return None, None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    outgoing = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    outgoing.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    if settings.dicom_tls_ca is not None:
        server.load_verify_locations(settings.dicom_tls_ca)
        server.verify_mode = ssl.CERT_REQUIRED
        outgoing.load_verify_locations(settings.dicom_tls_ca)
    else:
        outgoing.check_hostname, outgoing.verify_mode = False, ssl.CERT_NONE
    return server, outgoing


def service_ready(settings: GatewaySettings) -> tuple[bool, str]:
    """Whether the service is ready and takes the gateway's API key, and what it said: a
    wrong or missing key would otherwise keep every series queued while all looks well."""
    base = settings.service_url.rstrip("/")
    try:
        ready = httpx.get(base + "/health/ready", timeout=5)
        if ready.status_code != 200:
            return False, f"{base}: /health/ready HTTP {ready.status_code}"
        keyed = httpx.get(base + "/models", headers=client.auth(settings), timeout=5)
    except httpx.HTTPError as exc:
        return False, f"{base}: unreachable ({type(exc).__name__})"
    if keyed.status_code in (401, 403):
        which = "its API key" if settings.api_key else "an API key (UNET_API_KEY unset)"
        return False, f"{base}: ready, but refuses {which}: HTTP {keyed.status_code}"
    return True, base


def serve_http(settings: GatewaySettings, metrics: Metrics) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health/live":
                self._answer(200, b'{"status": "live"}', "application/json")
            elif self.path == "/health/ready":
                ready, _ = service_ready(settings)
                body = b'{"status": "ready"}' if ready else b'{"status": "not ready"}'
                self._answer(200 if ready else 503, body, "application/json")
            elif self.path == "/metrics":
                metrics.refresh()
                self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._answer(404, b'{"detail": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # health probes every few seconds are not news

    port = settings.dicom_http_port or 0
    server = ThreadingHTTPServer((settings.dicom_host, port), Handler)
    threading.Thread(target=server.serve_forever, name="unet-gateway-http", daemon=True).start()
    return server


def check(settings: GatewaySettings) -> int:
    """The service's readiness and a C-ECHO (or GET) to each destination; 0 when all pass."""
    ready, said = service_ready(settings)
    results = [("service", ready, said)]
    try:
        _, tls = tls_contexts(settings)
    except (OSError, ssl.SSLError) as exc:  # a certificate that is missing or not a pair
        results.append(("tls", False, f"{type(exc).__name__}: {exc}"))
        tls = None
    for destination in settings.dicom_destinations:
        outcome = client.echo(settings, destination, tls)
        results.append((destination.name, outcome.kind == "ok", outcome.detail))
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="unet-dicom-gateway",
        description="A DICOM node (C-ECHO, C-STORE) in front of the segmentation service.",
        epilog="Settings: UNET_* environment variables (docs/dicom.md, 'Behind any PACS').",
    )
    parser.add_argument("--check", action="store_true", help="check the service and each "
                        "destination (C-ECHO), then exit 0 (all fine) or 1")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"UNET_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        log.error("bad setting: %s", problems)
        return 3
    configure_logging(settings.log_format, settings.log_level)
    if args.check:
        return check(settings)
    return run(settings)


def run(settings: GatewaySettings) -> int:
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        server_tls, client_tls = tls_contexts(settings)
        store = GatewayStore(settings.dicom_state_dir)
        metrics = Metrics(store)
        receiver = Receiver(settings, store, metrics)
        receiver.start(server_tls)
        http = serve_http(settings, metrics) if settings.dicom_http_port is not None else None
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot start: %s", exc)
        return 3
    worker = Worker(settings, store, metrics, client_tls)
    worker.start()
    log.info(
        "ready: %d destination(s), series stable after %g s",
        len(settings.dicom_destinations), settings.dicom_stable_seconds,
    )  # fmt: skip
    stopping.wait()
    log.info("stopping")
    receiver.stop()
    worker.stop()
    if http is not None:
        http.shutdown()
    store.close()
    return 0
