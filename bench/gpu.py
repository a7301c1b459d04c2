"""The GPU path measured, as one short script for the accelerator machine (under 8 minutes).

    python -m bench.gpu --json gpu.json                  # CUDA (and TensorRT when present)
    python -m bench.gpu --providers cpu --quick          # a smoke run where there is no GPU

With the shipped model (fp32, and an fp16 copy made on the spot with ONNX
Runtime's converter, float32 in/out as ``training export --fp16`` writes):

- ms per megapixel for 2048^2 and 8192^2 images, fixed tile 1084, batch 1/4/8/16;
- first request of a new image size against a warm one (fixed shapes: a new
  size must cost no more than a known one -- no per-shape cuDNN search);
- fp16 against fp32: the largest probability difference on the same image;
- the same through ``POST /segment`` of a real server (2048^2 PNG, median of 5).

Prints a table and writes JSON. Nothing here is run by the tests.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from PIL import Image

from app.inference import Predictor, ProviderOptions, load_model
from app.inference.providers import GPU
from bench.report import report
from tests.reliability.conftest import start_command

REPO = Path(__file__).resolve().parents[1]


def image(side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fp16_copy(model: Path, folder: Path) -> Path:
    half = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    path = folder / "fp16.onnx"
    onnx.save(half, str(path))
    return path


def sweep(model: Path, provider: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for batch in args.batches:
        loaded = load_model(
            model, provider, options=ProviderOptions(cudnn_conv_algo_search="EXHAUSTIVE")
        )
        predictor = Predictor(
            loaded.engine.run, loaded.card, tile_size=args.tile, batch_size=batch, fixed_shape=True
        )
        run = predictor.predict
        first = timed(lambda run=run: run(image(300)))  # the one shape's search / build
        for side in args.sides:
            frame = image(side)
            run(frame)  # warm
            seconds = min(timed(lambda f=frame, r=run: r(f)) for _ in range(2))
            rows.append(
                {
                    "provider": loaded.engine.providers[0],
                    "model": model.stem,
                    "batch": batch,
                    "side": side,
                    "ms_per_mp": round(seconds * 1000 / (side * side / 1e6), 2),
                    "first_call_s": round(first, 3),
                }
            )
            print(rows[-1], flush=True)
    return rows


def new_sizes(model: Path, provider: str, args: argparse.Namespace) -> dict[str, float]:
    """Fixed shapes: a new image size after warm-up costs what a known size costs."""
    loaded = load_model(model, provider)
    predictor = Predictor(
        loaded.engine.run, loaded.card, tile_size=args.tile, batch_size=4, fixed_shape=True
    )
    predictor.predict(image(500))  # warm-up at the fixed shape
    known = timed(lambda: predictor.predict(image(1000)))
    known_again = timed(lambda: predictor.predict(image(1000, seed=1)))
    new = timed(lambda: np.asarray(predictor.predict(np.zeros((1000, 1300), np.uint8)).mask))
    return {
        "known_size_s": round(known_again, 4),
        "new_size_s": round(new, 4),
        "first_known_s": round(known, 4),
    }


def fp16_difference(fp32: Path, fp16: Path, provider: str, tile: int) -> float:
    frame = image(1024, seed=7)
    outputs = []
    for model in (fp32, fp16):
        loaded = load_model(model, provider)
        outputs.append(
            Predictor(
                loaded.engine.run, loaded.card, tile_size=tile, batch_size=4, fixed_shape=True
            )
            .predict(frame)
            .probabilities
        )
    return float(np.abs(outputs[0] - outputs[1]).max())


def through_service(model: Path, provider: str, folder: Path) -> dict[str, float]:
    """``POST /segment`` of a 2048^2 PNG on a real server: the first and the median of 5."""
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--http", "h11"]
    server = start_command(command, model, folder / "service.log", UNET_PROVIDERS=provider)
    try:
        buffer = io.BytesIO()
        Image.fromarray(image(2048)).save(buffer, "PNG")
        body = buffer.getvalue()
        url = f"{server.url}/segment"
        times = [timed(lambda: httpx.post(url, content=body, timeout=600)) for _ in range(6)]
        return {"first_s": round(times[0], 3), "median_s": round(statistics.median(times[1:]), 3)}
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--providers", nargs="+", default=["cuda", "tensorrt"])
    parser.add_argument("--tile", type=int, default=1084)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.tile, args.batches, args.sides = 380, [1, 2], [512]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        fp16 = fp16_copy(args.model, folder)
        for provider in args.providers:
            try:
                probe = load_model(args.model, provider)
            except Exception as exc:  # a provider this machine lacks: said, then the next
                results[provider] = {"skipped": str(exc).splitlines()[0]}
                continue
            on_gpu = probe.engine.providers[0] in GPU
            results[provider] = {
                "sweep": sweep(args.model, provider, args) + sweep(fp16, provider, args),
                "new_image_size": new_sizes(args.model, provider, args),
                "fp16_max_abs_dp": fp16_difference(args.model, fp16, provider, args.tile),
                "segment_2048": through_service(args.model, provider, folder),
                "on_gpu": on_gpu,
            }
    report(results, args.json)


if __name__ == "__main__":
    main()
