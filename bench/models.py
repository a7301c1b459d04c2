"""What each model of a repository costs in memory, and that one repository serves them all.

    python -m bench.models                 # copies of the shipped model: 1, 2 and 3 served
    python -m bench.models --json out.json

For n = 1, 2, 3 a service is started (uvicorn, a process of its own, the default engine)
with ``UNET_MODEL_REPOSITORY`` holding n copies of ``model/unet.onnx`` (each file its own
engine, as n different models of that size would be). Its resident memory (RSS, psutil) is
read once it is ready (every model loaded and warm) and again after one ``POST /segment``
of a 512² ISBI slice (seeded noise without ../shared/data) to each model; the added memory
per model is the difference between consecutive n. The answers of the copies are checked
to be byte-identical (the same model, whichever name serves it).
"""

from __future__ import annotations

import argparse
import io
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.large import REPO, content, tiles
from bench.report import report
from tests.conftest import start_server, stop_server

MiB = 1 << 20


def rss(pid: int) -> int:
    process = psutil.Process(pid)
    return int(process.memory_info().rss + sum(c.memory_info().rss for c in process.children()))


def serve(count: int, workdir: Path, image: bytes) -> dict[str, Any]:
    folder = workdir / f"repository-{count}"
    folder.mkdir()
    for index in range(count):
        shutil.copy(REPO / "model" / "unet.onnx", folder / f"m{index + 1}.onnx")
    env = {"UNET_MODEL_REPOSITORY": str(folder), "UNET_DEFAULT_MODEL": "m1"}
    server = start_server(env, workdir / f"service-{count}.log", timeout_s=600)
    try:
        ready = rss(server.process.pid)
        with httpx.Client(base_url=server.url, timeout=600) as client:
            listed = [m["name"] for m in client.get("/models").json()["models"]]
            answers = set()
            for name in listed:
                answer = client.post(f"/segment?model={name}", content=image)
                answer.raise_for_status()
                answers.add(answer.content)
        served = rss(server.process.pid)
    finally:
        stop_server(server)
    return {
        "models": listed,
        "rss_ready_mib": round(ready / MiB, 1),
        "rss_after_requests_mib": round(served / MiB, 1),
        "answers_identical": len(answers) == 1,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(next(tiles(512)), np.uint8)).save(buffer, format="PNG")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: serve(n, Path(tmp), buffer.getvalue()) for n in (1, 2, 3)}
    after = [runs[n]["rss_after_requests_mib"] for n in (1, 2, 3)]
    report(
        {
            "image": content(),
            "runs": runs,
            "added_per_model_mib": [round(b - a, 1) for a, b in itertools.pairwise(after)],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
