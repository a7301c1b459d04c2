"""Service overhead: POST /segment over real HTTP against a direct Predictor call.

    python -m bench.service                  # 512 and 2048 px, base-16 U-Net (minutes)
    python -m bench.service --quick          # small images, base 4: a smoke check

1. Direct: ``Predictor.predict`` on the decoded image, in this process, with the
   tiling the service would choose (its defaults, or --tile/--batch).
2. End to end: the same PNG posted to a real ``uvicorn app.main:app`` on
   loopback (one client, keep-alive), for ``format=png`` and ``format=rle``;
   the ratio end-to-end / direct is the service's overhead (target <= 1.10 at
   2048 px: decode + encode + HTTP must be small beside the network).
3. Concurrency: 1, 4 and 16 clients posting the smaller image; throughput
   (requests/s), p50 and p99 latency, and throughput relative to one client
   (target >= 0.95: admission queues, it does not thrash).

The direct run happens before the server starts, so the two never share cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from app.codecs.images import decode
from app.inference import Predictor, load_model
from app.inference.providers import CPU
from app.settings import Settings
from deploy.demo_model import UNetSpec, default_card, save_model
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 300


def synthetic_png(size: int, seed: int = 0) -> bytes:
    """A size x size 8-bit gray PNG: smooth blobs plus noise (compresses like a micrograph)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 128 + 60 * np.sin(12 * x + 3 * np.cos(9 * y)) + rng.normal(0, 20, (size, size))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


WARMUPS = 3  # ORT needs a few runs at a new shape before its timings settle


def interleaved_medians(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn()``, the functions run in turn so they share the
    machine's moments (noise hits both alike), after WARMUPS runs of each."""
    for fn in fns.values():
        for _ in range(WARMUPS):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def direct_predictor(args: argparse.Namespace, model: Path) -> Predictor:
    """A Predictor with the service's tiling, in this process."""
    loaded = load_model(model, args.providers, args.threads)
    on_gpu = loaded.engine.providers[0] != CPU
    settings = Settings(model_path=model, tile_size=args.tile, batch_size=args.batch)
    tile, batch = settings.tiling(on_gpu)
    return Predictor(loaded.engine.run, loaded.card, tile_size=tile, batch_size=batch)


def start_server(
    args: argparse.Namespace, model: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "UNET_MODEL_PATH": str(model),
        "UNET_PROVIDERS": args.providers,
        "UNET_THREADS": str(args.threads),
        "UNET_MAX_QUEUE": "64",  # the benchmark measures queueing, not refusals
        "UNET_MAX_UPLOAD_BYTES": str(256 << 20),
        **({"UNET_TILE_SIZE": str(args.tile)} if args.tile else {}),
        **({"UNET_BATCH_SIZE": str(args.batch)} if args.batch else {}),
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--no-access-log"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"uvicorn exited with {process.returncode}: see {log}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"uvicorn not ready after {READY_TIMEOUT_S} s: see {log}")


def post(client: httpx.Client, data: bytes, output: str) -> float:
    start = time.perf_counter()
    response = client.post(f"/segment?format={output}", content=data)
    if response.status_code != 200:
        raise SystemExit(f"/segment answered {response.status_code}: {response.text[:200]}")
    return time.perf_counter() - start


def concurrency(url: str, data: bytes, clients: int, requests: int) -> dict[str, float]:
    """Throughput and latency percentiles of ``requests`` posts spread over ``clients`` threads."""

    def worker(n: int) -> list[float]:
        with httpx.Client(base_url=url, timeout=600) as client:
            return [post(client, data, "png") for _ in range(n)]

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for ts in pool.map(worker, shares) for t in ts)
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": requests,
        "throughput": requests / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
    }


def print_tables(rows: list[dict[str, Any]], load: list[dict[str, float]]) -> None:
    print(f"\n{'image':>9} {'format':>7} {'direct s':>9} {'e2e s':>9} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['size']:>5} px² {r['format']:>7} {r['direct_s']:>9.3f} {r['e2e_s']:>9.3f} "
            f"{r['ratio']:>6.3f}"
        )
    single = load[0]["throughput"]
    print(f"\n{'clients':>7} {'req':>5} {'req/s':>8} {'vs 1':>6} {'p50 s':>8} {'p99 s':>8}")
    for c in load:
        print(
            f"{c['clients']:>7} {c['requests']:>5} {c['throughput']:>8.2f} "
            f"{c['throughput'] / single:>6.3f} {c['p50']:>8.3f} {c['p99']:>8.3f}"
        )


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = UNetSpec(depth=args.depth, base=args.base)
    model = save_model(workdir / "unet.onnx", spec, card=default_card(spec, name="bench-unet"))
    images = {size: synthetic_png(size) for size in args.sizes}
    print(f"model: depth {spec.depth}, base {spec.base}; images {args.sizes}")
    process, url = start_server(args, model, workdir / "uvicorn.log")
    try:
        predictor = direct_predictor(args, model)
        rows = []
        with httpx.Client(base_url=url, timeout=600) as client:
            for size, data in images.items():
                frame = decode(data, 1 << 40).frames[0]
                for output in ("png", "rle"):
                    timed = interleaved_medians(
                        {
                            "direct": lambda f=frame: predictor.predict(f),
                            "e2e": lambda d=data, o=output: post(client, d, o),
                        },
                        args.repeats,
                    )
                    rows.append(
                        {
                            "size": size,
                            "format": output,
                            "direct_s": timed["direct"],
                            "e2e_s": timed["e2e"],
                            "ratio": timed["e2e"] / timed["direct"],
                        }
                    )
        small = images[min(images)]
        load = [concurrency(url, small, c, max(args.requests, 2 * c)) for c in (1, 4, 16)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    print_tables(rows, load)
    return {"overhead": rows, "concurrency": load, "base": args.base, "depth": args.depth}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="POST /segment end to end vs a direct Predictor call")
    p.add_argument("--base", type=int, default=16, help="channels of the top level (paper: 64)")
    p.add_argument("--depth", type=int, default=4, help="poolings (paper: 4)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="image sides, px")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument(
        "--requests",
        type=int,
        default=96,
        help="requests per concurrency level (enough that start and tail do not dominate)",
    )
    p.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: per core)")
    p.add_argument("--tile", type=int, help="tile size (default: the service's)")
    p.add_argument("--batch", type=int, help="batch size (default: the service's)")
    p.add_argument("--quick", action="store_true", help="base 4, depth 2, 128/256 px, few runs")
    p.add_argument("--json", type=Path, help="also save every number to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.base, args.depth, args.sizes, args.repeats, args.requests = 4, 2, [128, 256], 2, 16
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        result = run(args, Path(scratch))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
