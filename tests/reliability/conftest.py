"""Real uvicorn processes on 127.0.0.1 for the reliability suite, and raw-socket clients.

Everything here is bounded: a few clients, a few seconds each, loopback only.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import REPO, Server, free_port, start_server, stop_server
from tests.nets import PAPER, default_card, save_model

BASE_ENV = {"UNET_THREADS": "1", "UNET_LOG_FORMAT": "json"}


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "paper.onnx"
    save_model(path, PAPER, seed=3, card=default_card(PAPER, name="paper"))
    return path


def serve(model: Path, log: Path, **env: str) -> Server:
    return start_server({**BASE_ENV, "UNET_MODEL_PATH": str(model), **env}, log)


@pytest.fixture
def server_factory(model: Path, tmp_path: Path) -> Iterator[object]:
    """``server_factory(**env)`` starts a server; all are stopped after the test."""
    started: list[Server] = []

    def make(**env: str) -> Server:
        started.append(serve(model, tmp_path / f"server{len(started)}.log", **env))
        return started[-1]

    yield make
    for running in started:
        stop_server(running)


def connect(url: str, timeout: float = 30) -> socket.socket:
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    return socket.create_connection((host, port), timeout=timeout)


def stalled_upload(url: str, declared: int = 1_000_000, sent: bytes = b"\x89PNG") -> socket.socket:
    """A request whose body starts and then stalls: the headers, ``sent``, then nothing."""
    s = connect(url)
    s.sendall(
        f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode() + sent
    )
    return s


def read_reply(s: socket.socket) -> str:
    """Everything the server sends until it closes the connection (or 30 s pass)."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def wait_ready(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


@dataclass
class Process:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_command(command: list[str], model: Path, log: Path, **env: str) -> Process:
    """``command`` (a uvicorn command line; host and port are added) serving ``model``."""
    port = free_port()
    environment = {**os.environ, **BASE_ENV, "UNET_MODEL_PATH": str(model), **env}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
    except AssertionError:
        process.kill()
        raise
    return Process(url, process, log)


# -- amplification inputs -------------------------------------------------------------


def strip_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_pages(count: int) -> bytes:
    """A TIFF of ``count`` pages of 1 x 1 px (tifffile: Pillow takes 40 s to write 10,000)."""
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for i in range(count):
            writer.write(np.full((1, 1), i % 256, np.uint8), contiguous=False)
    return buffer.getvalue()
