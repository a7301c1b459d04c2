"""The CPU path, engine x precision, side by side in one run.

    python -m bench.cpu                    # the shipped model; a 2048² ISBI mosaic
    python -m bench.cpu --repeats 3 --json out.json

Four parts, each timed alternately (``bench.service.interleaved_medians``: the machine's
noise hits every contender alike):

- ``network``: one tile of the service's CPU tiling (``CPU_TILE_SIZE``², batch 1) through
  each engine: ONNX Runtime fp32, ONNX Runtime on ``unet-int8.onnx``, OpenVINO fp32,
  OpenVINO bf16 (when the CPU computes it), OpenVINO on ``unet-int8.onnx``; ms per
  megapixel of output. Beside them the yardsticks: numpy's fp32 sgemm and OpenVINO's bf16
  MatMul, GFLOP/s (the peak this CPU reaches in each precision).
- ``segment``: ``POST /segment`` of the mosaic (PNG) to two services started here, the
  default configuration (``make run``'s: ``auto`` and ``auto``) and
  ``UNET_PROVIDERS=cpu UNET_PRECISION=fp32``; the speed ratio and how many mask pixels agree.
- ``objects``: ``format=instances`` against ``format=png`` on the default service.
- ``accuracy``: membrane Dice of both configurations on the model's validation slices
  (``../shared/data/isbi2012``; skipped without it).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from app.inference import Predictor, ProviderOptions, load_model
from app.inference.openvino import capabilities, runtime
from app.inference.predictor import CPU_TILE_SIZE
from bench.int8 import mosaic
from bench.large import ISBI, REPO, content
from bench.report import report
from bench.service import interleaved_medians
from tests.conftest import start_server, stop_server

ENGINES = {  # name: (model file, providers, precision)
    "onnxruntime fp32": ("unet.onnx", "cpu", "fp32"),
    "onnxruntime int8": ("unet-int8.onnx", "cpu", "fp32"),
    "openvino fp32": ("unet.onnx", "openvino", "fp32"),
    "openvino bf16": ("unet.onnx", "openvino", "bf16"),
    "openvino int8": ("unet-int8.onnx", "openvino", "auto"),
}
CONFIGS = {"default": {}, "cpu fp32": {"UNET_PROVIDERS": "cpu", "UNET_PRECISION": "fp32"}}


def has_bf16() -> bool:
    return "BF16" in (capabilities() or [])


def yardsticks(n: int = 2048) -> dict[str, float]:
    """GFLOP/s of an n x n x n matrix product: numpy fp32, OpenVINO bf16 (when it runs)."""
    ov = runtime()
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flops = 2 * n**3
    sgemm = interleaved_medians({"sgemm": lambda: a @ a}, 5)["sgemm"]
    out = {"numpy_fp32_sgemm_gflops": round(flops / sgemm / 1e9, 1)}
    if has_bf16():
        x = ov.opset13.parameter([n, n], ov.Type.f32)
        model = ov.Model([ov.opset13.matmul(x, ov.opset13.constant(a), False, False)], [x])
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        request = compiled.create_infer_request()
        bf16 = interleaved_medians({"bf16": lambda: request.infer({0: a})}, 5)["bf16"]
        out["openvino_bf16_matmul_gflops"] = round(flops / bf16 / 1e9, 1)
    return out


def network(models: Path, repeats: int) -> dict[str, Any]:
    runs, output_px = {}, 0
    tile = np.random.default_rng(1).random((1, 1, CPU_TILE_SIZE, CPU_TILE_SIZE), np.float32)
    for name, (file, providers, precision) in ENGINES.items():
        if precision == "bf16" and not has_bf16():
            continue
        engine = load_model(
            models / file, providers, options=ProviderOptions(precision=precision)
        ).engine
        output_px = int(np.prod(engine.run(tile).shape[-2:]))
        runs[name] = lambda e=engine: e.run(tile)
    seconds = interleaved_medians(runs, repeats)
    base = seconds["onnxruntime fp32"]
    return {
        "tile": CPU_TILE_SIZE,
        "ms_per_megapixel": {n: round(s * 1e3 / (output_px / 1e6), 1) for n, s in seconds.items()},
        "speed_vs_onnxruntime_fp32": {n: round(base / s, 2) for n, s in seconds.items()},
    }


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def segment(workdir: Path, model: Path, image: np.ndarray, repeats: int) -> dict[str, Any]:
    data, servers, clients = png(image), {}, {}
    try:
        for name, env in CONFIGS.items():
            servers[name] = start_server(
                {"UNET_MODEL_PATH": str(model), "UNET_MAX_UPLOAD_BYTES": str(256 << 20), **env},
                workdir / f"{name.replace(' ', '-')}.log",
            )
            clients[name] = httpx.Client(base_url=servers[name].url, timeout=600)
        engines = {n: clients[n].get("/model").json() for n in clients}
        masks = {}
        for name, client in clients.items():
            answer = client.post("/segment?format=png", content=data)
            answer.raise_for_status()
            masks[name] = np.asarray(Image.open(io.BytesIO(answer.content)))

        def post(name: str, output: str) -> None:
            clients[name].post(f"/segment?format={output}", content=data).raise_for_status()

        seconds = interleaved_medians(
            {
                "default png": lambda: post("default", "png"),
                "cpu fp32 png": lambda: post("cpu fp32", "png"),
                "default instances": lambda: post("default", "instances"),
            },
            repeats,
        )
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            stop_server(server)
    return {
        "engines": {n: f"{e['providers'][0]} {e['precision']}" for n, e in engines.items()},
        "seconds": {n: round(s, 3) for n, s in seconds.items()},
        "default_speedup_over_cpu_fp32": round(seconds["cpu fp32 png"] / seconds["default png"], 2),
        "mask_pixels_equal": round(float((masks["default"] == masks["cpu fp32"]).mean()), 5),
        "instances_over_png_default": round(
            seconds["default instances"] / seconds["default png"], 2
        ),
    }


def accuracy(model: Path) -> dict[str, Any]:
    from training.data import load_samples
    from training.evaluate import evaluate_masks, predictor_masks

    if not (ISBI / "train" / "label").is_dir():
        return {"skipped": f"no ISBI 2012 labels under {ISBI}"}
    out: dict[str, Any] = {}
    for name, (providers, precision) in {
        "default": ("auto", "auto"),
        "cpu fp32": ("cpu", "fp32"),
    }.items():
        loaded = load_model(model, providers, options=ProviderOptions(precision=precision))
        card = loaded.card.model_extra or {}
        labels = card["labels"]
        samples = load_samples(
            ISBI / "train",
            names=card["training"]["split"]["val"],
            label_mode=labels["mode"],
            foreground_value=labels["foreground_value"],
            num_classes=len(loaded.card.classes),
        )
        predictor = Predictor(loaded.engine.run, loaded.card)
        figures = evaluate_masks(
            predictor_masks(predictor, threshold=loaded.card.threshold),
            samples,
            loaded.card.classes,
            labels["objects"],
        )
        out[name] = {
            "engine": f"{loaded.engine.providers[0]} {loaded.engine.precision}",
            "membrane_dice": round(figures["dice"]["membrane"], 4),
        }
    out["dice_difference"] = round(
        abs(out["default"]["membrane_dice"] - out["cpu fp32"]["membrane_dice"]), 4
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "model")
    parser.add_argument("--size", type=int, default=2048, help="the mosaic's side, px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"image": f"{args.size}² ({content()})"}
    results["yardsticks"] = yardsticks()
    results["network"] = network(args.models, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        results["segment"] = segment(
            Path(tmp), args.models / "unet.onnx", mosaic(args.size), args.repeats
        )
    results["accuracy"] = accuracy(args.models / "unet.onnx")
    results["seconds"] = round(time.perf_counter() - started, 1)
    report(results, args.json)


if __name__ == "__main__":
    main()
