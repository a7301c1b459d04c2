"""Jobs beside interactive requests: /segment latency with and without a running job.

    python -m bench.jobs                        # the shipped model, a 20000 x 20000 montage
    python -m bench.jobs --side 8192 --requests 20 --json out.json
    python -m bench.jobs --side 8192 --dask 2   # and again with the job on 2 Dask workers

One real ``uvicorn app.main:app`` on loopback with the shipped model.

1. Alone: ``--requests`` POST /segment of a 512 x 512 image (an ISBI 2012 slice,
   noise when ``../shared/data`` is absent), one after another; p50 / p99.
2. Beside a job: a tiled TIFF montage of ``--side`` px submitted as a job
   (format=ome-zarr, uploaded); once its first tiles are done, the same requests
   again, while the job runs; p50 / p99 and their ratio to (1). A request may
   wait for the one job tile batch in flight (DESIGN.md), never for more.
3. The job to its end: its wall time, tiles/s and the server's peak RSS;
   ``--check`` also runs ``unet-segment`` on the montage and compares the class
   maps (bit for bit).

``--dask N``: all of it again, side by side, with the job's tiles on a Dask scheduler and
N worker processes (one thread each, ``nice -n 19``) on this machine
(UNET_DASK_SCHEDULER). The server's peak RSS is then the service's only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import zarr
from PIL import Image

from bench.large import REPO, content, write_tiff
from bench.report import report
from bench.service import free_port, synthetic_png

READY_S = 300


def interactive_image() -> bytes:
    """A 512 x 512 PNG: the first ISBI 2012 test slice's top-left corner, else synthetic."""
    slices = sorted((REPO.parent / "shared/data/isbi2012/test/image").glob("*.png"))
    if not slices:
        return synthetic_png(512)
    buffer = io.BytesIO()
    Image.open(slices[0]).convert("L").crop((0, 0, 512, 512)).save(buffer, "PNG")
    return buffer.getvalue()


def start(
    jobs: Path, log: Path, scheduler: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "UNET_JOBS_DIR": str(jobs), "UNET_MAX_QUEUE": "64"}
    if scheduler:
        env["UNET_DASK_SCHEDULER"] = scheduler
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "h11"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the server did not start: see {log}")


def latencies(http: httpx.Client, body: bytes, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        began = time.perf_counter()
        answer = http.post("/segment", content=body)
        if answer.status_code != 200:
            raise SystemExit(f"/segment answered {answer.status_code}: {answer.text[:200]}")
        seconds.append(time.perf_counter() - began)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_s": round(statistics.median(ordered), 3), "p99_s": round(p99, 3),
            "max_s": round(ordered[-1], 3), "n": len(ordered)}  # fmt: skip


def peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def run(args: argparse.Namespace, scratch: Path, scheduler: str | None = None) -> dict[str, Any]:
    montage = scratch.parent / "montage.ome.tif"
    if not montage.exists():
        write_tiff(montage, args.side)
    body = interactive_image()
    scratch.mkdir()
    process, url = start(scratch / "jobs", scratch / "server.log", scheduler)
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            latencies(http, body, 3)  # warm-up
            alone = latencies(http, body, args.requests)
            with montage.open("rb") as upload:
                job = http.post("/jobs?format=ome-zarr", content=upload).json()
            began = time.perf_counter()
            while http.get(f"/jobs/{job['id']}").json()["progress"]["tiles_done"] == 0:
                time.sleep(0.1)
            beside = latencies(http, body, args.requests)
            during = http.get(f"/jobs/{job['id']}").json()
            while (state := http.get(f"/jobs/{job['id']}").json())["status"] == "running":
                time.sleep(1)
            job_s = time.perf_counter() - began
            rss = peak_rss_mb(process.pid)
            result = scratch / "result.zip"
            with (
                http.stream("GET", f"/jobs/{job['id']}/result") as answer,
                result.open("wb") as out,
            ):
                for chunk in answer.iter_bytes():
                    out.write(chunk)
    finally:
        process.terminate()
        process.wait(60)
    tiles = state["progress"]["tiles_total"]
    results: dict[str, Any] = {
        "content": content(), "side": args.side, "job_status": state["status"],
        "job_seconds": round(job_s, 1), "job_tiles": tiles,
        "tiles_per_s": round(tiles / job_s, 2), "server_peak_rss_mb": rss,
        "still_running_after_requests": during["status"] == "running",
        "alone": summary(alone), "beside_job": summary(beside),
    }  # fmt: skip
    for key in ("p50_s", "p99_s"):
        results[f"{key[:3]}_ratio"] = round(results["beside_job"][key] / results["alone"][key], 2)
    if args.check:
        results["equals_unet_segment"] = check(montage, result, scratch)
    return results


def check(montage: Path, result: Path, scratch: Path) -> bool:
    from app import cli

    out = scratch / "cli"
    if cli.main([str(montage), "--out", str(out), "--format", "ome-zarr"]) != 0:
        raise SystemExit("unet-segment failed")
    store = zarr.storage.ZipStore(result, mode="r")
    mine = zarr.open_group(store, mode="r")["0"]
    theirs = zarr.open_group(str(out / "montage.ome.zarr"), mode="r")["0"]
    band = 2048
    return all(
        np.array_equal(mine[top : top + band], theirs[top : top + band])
        for top in range(0, mine.shape[0], band)
    )


@contextlib.contextmanager
def dask_cluster(workers: int, scratch: Path) -> Iterator[str]:
    """A scheduler and ``workers`` worker processes (one thread each) on 127.0.0.1, the
    workers at the lowest CPU priority (``nice -n 19``): on the service's own machine they
    take only the cores /segment leaves. The scheduler's address."""
    dask, port = str(Path(sys.executable).parent / "dask"), free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (scratch / "dask.log").open("wb")
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    worker = ["nice", "-n", "19", dask, "worker", address, "--nthreads", "1",
              "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    processes = [subprocess.Popen(scheduler, stdout=log, stderr=subprocess.STDOUT)]
    processes += [
        subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT) for _ in range(workers)
    ]
    try:
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(60)
        log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=20000, help="the montage's side, px")
    parser.add_argument("--requests", type=int, default=30, help="/segment calls per phase")
    parser.add_argument("--check", action="store_true", help="compare with unet-segment")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--dask", type=int, default=0, metavar="N", help="also on N workers")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        if not args.dask:
            report(run(args, Path(scratch) / "service"), args.json)
            return
        results = {"in_service": run(args, Path(scratch) / "service")}
        with dask_cluster(args.dask, Path(scratch)) as address:
            results["dask"] = run(args, Path(scratch) / "dask", address)
        report(results, args.json)


if __name__ == "__main__":
    main()
