"""The hardening figures, measured on real servers on 127.0.0.1 (the reliability tests' set-ups).

    python -m bench.hardening                 # the shipped model, default settings
    python -m bench.hardening --json out.json

- time to refuse the amplification inputs (1,000,000 x 1 PNG; 10,000 pages of 1 x 1);
- a stalled body: seconds from its last byte to the 408 (UNET_BODY_TIMEOUT=2);
- a client leaving a long inference: seconds from its disconnect to a free slot;
- RSS before / peak / after nine concurrent 60 MiB uploads;
- SIGTERM with a stalled upload: exit status and seconds, per start command;
- schemathesis --checks all: cases generated and failures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from tests.conftest import Server, start_server, stop_server
from tests.reliability.conftest import (
    read_reply,
    stalled_upload,
    start_command,
    strip_png,
    tiny_pages,
)

REPO = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "deploy/serve.py", "app.main:app", "--http", "h11"]


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def timed_post(url: str, data: bytes) -> tuple[int, float]:
    began = time.perf_counter()
    status = httpx.post(f"{url}/segment", content=data, timeout=600).status_code
    return status, time.perf_counter() - began


def amplification(model: Path, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = start_server({"UNET_MODEL_PATH": str(model)}, work / "amp.log")
    try:
        timed_post(server.url, small_png())  # warm
        for name, data in [
            ("strip_1000000x1_png", strip_png(1_000_000, 1)),
            ("tiff_10000_pages", tiny_pages(10_000)),
        ]:
            status, seconds = timed_post(server.url, data)
            results[name] = {"bytes": len(data), "status": status, "ms": round(seconds * 1000, 1)}
    finally:
        stop_server(server)
    server = start_server(
        {"UNET_MODEL_PATH": str(model), "UNET_MAX_FRAMES": "100000"}, work / "a2.log"
    )
    try:
        status, seconds = timed_post(server.url, tiny_pages(10_000))
        results["tiff_10000_pages_no_frame_limit"] = {
            "status": status,
            "ms": round(seconds * 1000, 1),
        }
    finally:
        stop_server(server)
    return results


def stalled(model: Path, work: Path) -> dict[str, Any]:
    env = {"UNET_MODEL_PATH": str(model), "UNET_BODY_TIMEOUT": "2"}
    server = start_server(env, work / "stall.log")
    try:
        s = stalled_upload(server.url)
        began = time.perf_counter()
        reply = read_reply(s)
        s.close()
        return {"status": reply[9:12], "seconds_to_answer": round(time.perf_counter() - began, 2)}
    finally:
        stop_server(server)


def disconnect(model: Path, work: Path) -> dict[str, Any]:
    env = {"UNET_MODEL_PATH": str(model), "UNET_MAX_QUEUE": "0"}
    server = start_server(env, work / "disconnect.log")
    try:
        big = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (4096, 4096), np.uint8)).save(
            big, "PNG"
        )
        client = httpx.Client(timeout=3.0)
        with contextlib.suppress(httpx.TimeoutException):
            client.post(f"{server.url}/segment", content=big.getvalue())
        client.close()
        left = time.perf_counter()
        while (
            httpx.post(f"{server.url}/segment", content=small_png(), timeout=60).status_code == 503
        ):
            time.sleep(0.02)
        free = time.perf_counter() - left
        lines = server.log_lines()
        line = next(x for x in lines if '"status": 499' in x or "status=499" in x)
        tiles = re.findall(r"tiles_(?:done|total)\D+(\d+)", line)
        return {"seconds_to_free_slot": round(free, 2), "tiles_done_of_total": tiles}
    finally:
        stop_server(server)


def memory(model: Path, work: Path) -> dict[str, Any]:
    server = start_server({"UNET_MODEL_PATH": str(model)}, work / "memory.log")
    try:
        pid = server.process.pid
        body = np.random.default_rng(0).integers(0, 256, 60 << 20, dtype=np.uint8).tobytes()
        for _ in range(2):
            timed_post(server.url, small_png())
        rss = lambda: psutil.Process(pid).memory_info().rss >> 20  # noqa: E731
        before, peak = rss(), 0
        threads = [threading.Thread(target=timed_post, args=(server.url, body)) for _ in range(9)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss())
            time.sleep(0.05)
        time.sleep(1)
        return {"rss_before_mib": before, "rss_peak_mib": peak, "rss_after_mib": rss()}
    finally:
        stop_server(server)


def shutdown(model: Path, work: Path) -> dict[str, Any]:
    results = {}
    commands = {
        "serve.py (make run, images)": [*SERVE, "--timeout-graceful-shutdown", "20"],
        "plain uvicorn": [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "h11"],
    }
    for name, command in commands.items():
        server = start_command(command, model, work / "shutdown.log")
        s = stalled_upload(server.url)
        time.sleep(0.3)
        began = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(timeout=60)
        results[name] = {
            "exit_status": status,
            "seconds": round(time.perf_counter() - began, 2),
            "stalled_client_got": read_reply(s)[9:12],
        }
        s.close()
    return results


def schemathesis(model: Path, work: Path) -> dict[str, Any]:
    server: Server = start_server({"UNET_MODEL_PATH": str(model)}, work / "schema.log")
    try:
        config = REPO / "tests" / "reliability" / "schemathesis.toml"
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
        command += [f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "200"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        found = re.search(r"(\d+) generated, (.*)", done.stdout)
        return {
            "exit_status": done.returncode,
            "summary": found.group(0) if found else done.stdout[-500:],
        }
    finally:
        stop_server(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hardening-") as tmp:
        work = Path(tmp)
        for name, measure in [
            ("amplification", amplification),
            ("stalled_body", stalled),
            ("disconnect", disconnect),
            ("memory", memory),
            ("sigterm_with_stalled_upload", shutdown),
            ("schemathesis", schemathesis),
        ]:
            results[name] = measure(args.model, work)
            print(name, json.dumps(results[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
