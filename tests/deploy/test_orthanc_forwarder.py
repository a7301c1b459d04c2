"""The Orthanc forwarder's core against a real HTTP server on 127.0.0.1 (no Orthanc needed)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEG = b"\x00" * 128 + b"DICM" + b"fake SEG 1.2.840.10008.5.1.4.1.1.66.4"
CT = b"\x00" * 128 + b"DICM" + b"fake CT 1.2.840.10008.5.1.4.1.1.2"


def load_forwarder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "unet_forwarder", ROOT / "deploy" / "orthanc" / "unet_forwarder.py"
    )
    if spec is None or spec.loader is None:
        pytest.fail("deploy/orthanc/unet_forwarder.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports without Orthanc
    return module


fwd = load_forwarder()


class FakeService(BaseHTTPRequestHandler):
    """Answers /segment like the service: scripted statuses, records what it got."""

    script: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeService.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, headers, answer = FakeService.script.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def service() -> Iterator[str]:
    FakeService.script, FakeService.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_posts_the_instance_and_returns_the_seg(service: str) -> None:
    FakeService.script = [(200, {"Content-Type": "application/dicom"}, SEG)]
    assert fwd.forward(CT, service, api_key="k1") == SEG
    (request,) = FakeService.seen
    assert request["path"] == "/segment?format=dicom-seg"
    assert request["body"] == CT
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Type"] == "application/dicom"
    assert headers["Authorization"] == "Bearer k1"


def test_503_is_retried_after_retry_after(service: str) -> None:
    FakeService.script = [(503, {"Retry-After": "7"}, b"{}"), (200, {}, SEG)]
    waits: list[float] = []
    assert fwd.forward(CT, service, sleep=waits.append) == SEG
    assert waits == [7.0]
    assert len(FakeService.seen) == 2


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_instances_the_service_refuses_are_skipped(service: str, status: int) -> None:
    FakeService.script = [(status, {}, b'{"detail": "no image"}')]
    assert fwd.forward(CT, service) is None


@pytest.mark.parametrize("status", [401, 500])
def test_failures_raise(service: str, status: int) -> None:
    FakeService.script = [(status, {}, b"{}")]
    with pytest.raises(fwd.ForwardError, match=str(status)):
        fwd.forward(CT, service)


def test_still_busy_after_the_retries_raises(service: str) -> None:
    FakeService.script = [(503, {"Retry-After": "1"}, b"{}")] * 3
    with pytest.raises(fwd.ForwardError, match="busy"):
        fwd.forward(CT, service, retries=3, sleep=lambda _: None)


def test_a_seg_is_never_sent_back(service: str) -> None:
    assert fwd.forward(SEG, service) is None
    assert FakeService.seen == []


def test_unreachable_service_raises() -> None:
    def refuse(
        url: str, body: bytes, headers: object, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        raise ConnectionRefusedError("refused")

    with pytest.raises(fwd.ForwardError, match="unreachable"):
        fwd.forward(CT, "http://127.0.0.1:9", refuse)
