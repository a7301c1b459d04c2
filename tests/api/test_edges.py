"""Sharp edges of the hardening issue: redirects, echoed values, headers, APNG, keys, docs, CORS."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.auth import key_matches
from app.inference.engine import Engine
from app.main import create_app
from tests.conftest import API_KEY, Server, settings
from tests.samples import noise, png


def test_no_redirects_a_trailing_slash_is_404(client: TestClient) -> None:
    response = client.post(
        "/segment/",
        content=png(noise(64, 64)),
        headers={"Host": "evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 404
    assert "location" not in response.headers


def test_a_long_client_value_is_quoted_short(client: TestClient) -> None:
    value = "9" * 60_000
    response = client.post(f"/segment?threshold={value}", content=png(noise(64, 64)))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) < 400
    assert "60002 chars" in detail  # repr adds the quotes


def raw_request(server: Server, head: bytes) -> str:
    """Send raw bytes; everything the server answers until it closes (or 10 s of silence).

    The bytes go from a thread while this one reads, so that an answer the server sends
    before it closes on a request it will not read to the end is seen; a server that
    closes (or resets) mid-send ends the sending, not the test.
    """
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as s:

        def send() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(head)

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        sender.join(timeout=15)
        return b"".join(chunks).decode("latin-1")


def assert_refused(server: Server, reply: str) -> None:
    """An error status, or (where the server reset the connection before its answer could
    be read) nothing at all; never an answer served; and the server still healthy."""
    assert reply == "" or reply.startswith(("HTTP/1.1 400", "HTTP/1.1 431")), reply[:200]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_a_huge_header_is_refused(server: Server) -> None:
    reply = raw_request(
        server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    )
    assert_refused(server, reply)


def test_ten_thousand_headers_are_refused(server: Server) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
    reply = raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert_refused(server, reply)


def test_many_small_headers_are_431(server: Server) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(150))  # under h11's 16 KiB
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    reply = raw_request(server, head + lines + b"\r\n")
    assert reply.startswith("HTTP/1.1 431")
    assert '"detail"' in reply


def apng(*frames: np.ndarray) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, "PNG", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def test_an_animated_png_is_every_frame_never_silently_frame_0(client: TestClient) -> None:
    data = apng(noise(48, 48, seed=1), noise(48, 48, seed=2))
    single = client.post("/segment?format=png", content=data)
    assert single.status_code == 422
    assert "format=rle" in single.json()["detail"]
    segments = client.post("/segment?format=rle", content=data).json()["segments"]
    assert sorted({s["frame"] for s in segments}) == [0, 1]


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_keys_compare_the_same_way_in_both_headers(server: Server, header: str) -> None:
    value = f"{API_KEY} " if header == "X-API-Key" else f"Bearer {API_KEY} "
    for given, status in [(value, "200"), (value.replace(API_KEY, "other"), "401")]:
        head = f"GET /model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}: {given}\r\n\r\n"
        assert raw_request(server, head.encode()).startswith(f"HTTP/1.1 {status}")


def test_key_matching_ignores_surrounding_whitespace_only() -> None:
    keys = ("k1", "k2")
    assert key_matches(" k1 ", keys)
    assert key_matches("k2\t", keys)
    assert not key_matches("k 1", keys)
    assert not key_matches("  ", keys)
    assert not key_matches(None, keys)


def test_the_schema_bounds_class_by_the_model(
    client: TestClient, softmax_client: TestClient
) -> None:
    for c, highest in [(client, 1), (softmax_client, 2)]:
        operation = c.get("/openapi.json").json()["paths"]["/segment"]["post"]
        (klass,) = [p for p in operation["parameters"] if p["name"] == "class"]
        assert (klass["schema"]["minimum"], klass["schema"]["maximum"]) == (1, highest)
        assert operation["requestBody"]["required"] is True


def test_security_is_declared_only_when_keys_are_set(
    client: TestClient, binary_model: Path
) -> None:
    assert "security" not in client.get("/openapi.json").json()["paths"]["/segment"]["post"]
    with TestClient(create_app(settings(binary_model, api_keys=("k",)))) as keyed:
        assert keyed.get("/openapi.json").json()["paths"]["/segment"]["post"]["security"]


def test_docs_work_without_internet(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", html)
        assets = [a or b for a, b in urls]
        assert assets, html
        assert not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


@pytest.fixture(scope="module")
def cors_client(binary_model: Path) -> Iterator[TestClient]:
    app = create_app(settings(binary_model, cors_origins=("https://viewer.example",)))
    with TestClient(app) as c:
        yield c


PREFLIGHT = {
    "Origin": "https://viewer.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_is_off_unless_configured(client: TestClient) -> None:
    preflight = client.options("/segment", headers=PREFLIGHT)
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post(
        "/segment", content=png(noise(64, 64)), headers={"Origin": PREFLIGHT["Origin"]}
    )
    assert "access-control-allow-origin" not in answer.headers


def test_cors_for_the_configured_origins(cors_client: TestClient) -> None:
    preflight = cors_client.options("/segment", headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://viewer.example"
    answer = cors_client.post(
        "/segment", content=png(noise(64, 64)), headers={"Origin": PREFLIGHT["Origin"]}
    )
    assert answer.headers["access-control-allow-origin"] == "https://viewer.example"
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
    other = cors_client.options("/segment", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_onnx_runtime_telemetry_is_off(binary_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append(True))
    Engine(binary_model, providers="cpu", threads=1)
    assert calls == [True]
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "ORT_DISABLE_TELEMETRY=1" in makefile
