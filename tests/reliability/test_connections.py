"""Stalled and abandoned requests, shutdown with a stalled upload, memory after big uploads.

Each finding of the hardening issue, on a real server process on 127.0.0.1:
stalled bodies held every admission slot; work went on after the client left
(and was logged as 200); plain uvicorn never exited on SIGTERM while an upload
stalled; the cut-off client got a plain-text 500; nine 60 MiB uploads left
~300 MiB behind for good.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from conftest import Process, read_reply, stalled_upload, start_command

from tests.conftest import Server
from tests.samples import noise, png

SMALL = png(noise(64, 64))
SERVE = [sys.executable, "deploy/serve.py", "app.main:app", "--http", "h11"]


def post_small(url: str) -> int:
    return httpx.post(f"{url}/segment", content=SMALL, timeout=30).status_code


def test_a_stalled_body_is_408_and_frees_its_slot(server_factory: Callable[..., Server]) -> None:
    server = server_factory(UNET_BODY_TIMEOUT="1", UNET_MAX_QUEUE="1")
    stalled = [stalled_upload(server.url) for _ in range(2)]  # every slot taken
    try:
        time.sleep(0.3)
        assert post_small(server.url) == 503
        replies = [read_reply(s) for s in stalled]  # the server answers, then closes
    finally:
        for s in stalled:
            s.close()
    for reply in replies:
        head, _, body = reply.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 408")
        assert "connection: close" in head.lower()
        assert "UNET_BODY_TIMEOUT" in json.loads(body)["detail"]
    assert post_small(server.url) == 200


def test_a_client_that_leaves_stops_its_inference_within_a_batch(
    server_factory: Callable[..., Server],
) -> None:
    # 204 px tiles of the paper's geometry keep 20 px each: ~10,000 tiles for 2048^2,
    # minutes of work that the client abandons after a second.
    server = server_factory(UNET_TILE_SIZE="204", UNET_MAX_QUEUE="0")
    big = png(noise(2048, 2048))
    client = httpx.Client(timeout=1.0)
    with pytest.raises(httpx.TimeoutException):
        client.post(f"{server.url}/segment", content=big)
    client.close()  # the connection goes
    deadline = time.monotonic() + 60
    while post_small(server.url) == 503:  # the slot is busy until the work stops
        assert time.monotonic() < deadline, "the abandoned work never stopped"
        time.sleep(0.1)
    assert post_small(server.url) == 200
    (cancelled,) = server.json_log(lambda line: line.get("status") == 499)
    assert 0 < cancelled["tiles_done"] < cancelled["tiles_total"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'unet_requests_total{endpoint="/segment",status="499"} 1.0' in metrics


@pytest.mark.parametrize(
    ("command", "statuses"),
    [
        ([*SERVE, "--timeout-graceful-shutdown", "20"], {0}),  # make run, the images' CMD
        ([sys.executable, "-m", "uvicorn", "app.main:app", "--http", "h11"], {0, -15}),
    ],
    ids=["serve.py", "plain-uvicorn"],
)
def test_sigterm_with_a_stalled_upload_exits_promptly(
    model: Path, tmp_path: Path, command: list[str], statuses: set[int]
) -> None:
    server = start_command(command, model, tmp_path / "server.log")
    stalled = stalled_upload(server.url)
    time.sleep(0.3)
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        status = server.process.wait(timeout=15)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    seconds = time.monotonic() - began
    reply = read_reply(stalled)
    stalled.close()
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 503"), reply
    assert "shutting down" in json.loads(body)["detail"]
    assert status in statuses
    assert seconds < 15
    assert "Traceback" not in server.log.read_text()


def test_work_cut_off_by_shutdown_gets_a_json_503(model: Path, tmp_path: Path) -> None:
    """Past the graceful period uvicorn cancels the request: the client still gets JSON."""
    command = [*SERVE, "--timeout-graceful-shutdown", "1"]
    server: Process = start_command(command, model, tmp_path / "server.log", UNET_TILE_SIZE="204")
    answer: list[httpx.Response] = []

    def long_request() -> None:
        answer.append(
            httpx.post(f"{server.url}/segment", content=png(noise(2048, 2048)), timeout=60)
        )

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(1.5)  # the inference is running
    server.process.send_signal(signal.SIGTERM)
    thread.join(60)
    status = server.process.wait(timeout=15)  # the work stopped too: nothing holds the exit
    (response,) = answer
    assert response.status_code == 503
    assert "stopped" in response.json()["detail"]
    assert status == 0


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_memory_is_given_back_after_nine_concurrent_60_mib_uploads(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    pid = server.process.pid
    body = np.random.default_rng(0).integers(0, 256, 60 << 20, dtype=np.uint8).tobytes()
    for _ in range(2):  # warm up the allocator and the code paths
        post_small(server.url)
    before, peak = rss(pid), 0
    statuses: list[int] = []

    def upload() -> None:
        answer = httpx.post(f"{server.url}/segment", content=body, timeout=120)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=upload) for _ in range(9)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    time.sleep(1.0)
    after = rss(pid)
    print(f"RSS before {before >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB")
    assert sorted(statuses) == [400] * 9  # random bytes: not an image
    assert after - before < 100 << 20
