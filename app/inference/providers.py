"""The provider table: what each ``UNET_PROVIDERS`` value runs on, with options, and the
precisions (``UNET_PRECISION``).

One list that the settings, the messages and the engines read. ``cpu``, ``cuda`` and
``tensorrt`` are ONNX Runtime execution providers; ``openvino`` is the OpenVINO runtime
itself (app/inference/openvino.py), not ONNX Runtime's OpenVINO provider: that one comes as
``onnxruntime-openvino``, a second wheel of the ``onnxruntime`` module that lags the stock
one (1.24 against our 1.32), and two wheels of one module cannot share an environment.
Options come from the settings (``ProviderOptions``) and are what ONNX Runtime's users
report the GPU providers need:

- CUDA: ``device_id``; ``cudnn_conv_algo_search`` (EXHAUSTIVE searches every
  convolution's algorithm once per input shape -- ~0.6 s a shape, reported --
  which the service's fixed tile shape makes a one-time cost at warm-up);
  ``do_copy_in_default_stream``.
- TensorRT: ``device_id``; engine and timing caches in ``UNET_TRT_CACHE_DIR``
  (an engine takes seconds to minutes to build: keep it on a volume); fp16;
  one optimisation profile = the fixed tile batch, so one engine serves every
  image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
OPENVINO = "OpenVINO"  # what /health and /model call the OpenVINO runtime on the CPU
AUTO = "auto"
# UNET_PRECISION: auto = bf16 on a CPU with AVX512-BF16 or AMX (OpenVINO), fp16 on TensorRT,
# else fp32. The INT8 variant is a model file of its own, not a precision.
FP32, BF16, FP16 = "fp32", "bf16", "fp16"
PRECISIONS = (AUTO, FP32, BF16, FP16)
Runtime = Literal["onnxruntime", "openvino"]
GPU = frozenset({CUDA, TENSORRT})
AlgoSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]


@dataclass(frozen=True)
class ProviderOptions:
    """The settings behind the provider options.

    input_shape: N x C x H x W, the fixed tile batch the service runs (TensorRT's
    optimisation profile); None: no profile (shapes as they come).
    """

    device_id: int = 0
    cudnn_conv_algo_search: AlgoSearch = "EXHAUSTIVE"
    trt_cache_dir: Path | None = None
    trt_fp16: bool = True
    input_shape: tuple[int, int, int, int] | None = None
    precision: str = AUTO


OptionFn = Callable[[ProviderOptions, str], dict[str, str]]  # (options, input name) -> ORT's


def cuda_options(o: ProviderOptions, input_name: str) -> dict[str, str]:
    return {
        "device_id": str(o.device_id),
        "cudnn_conv_algo_search": o.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1",
    }


def tensorrt_options(o: ProviderOptions, input_name: str) -> dict[str, str]:
    options = {
        "device_id": str(o.device_id),
        "trt_fp16_enable": "True" if o.trt_fp16 and o.precision != FP32 else "False",
    }
    if o.trt_cache_dir is not None:
        cache = str(o.trt_cache_dir)
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache,
        }
    if o.input_shape is not None:
        profile = f"{input_name}:{'x'.join(map(str, o.input_shape))}"
        for bound in ("min", "opt", "max"):
            options[f"trt_profile_{bound}_shapes"] = profile
    return options


@dataclass(frozen=True)
class Provider:
    """An entry of the table: ``chain``, ONNX Runtime providers preferred first (the
    rest take what it cannot); ``options``, per ONNX Runtime provider, how to make its
    options; ``runtime``, which library runs it."""

    name: str
    chain: tuple[str, ...]
    options: Mapping[str, OptionFn] = field(default_factory=dict)
    runtime: Runtime = "onnxruntime"

    def session_providers(
        self, options: ProviderOptions, input_name: str
    ) -> list[tuple[str, dict[str, str]]]:
        return [
            (p, self.options[p](options, input_name) if p in self.options else {})
            for p in self.chain
        ]


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("cpu", (CPU,)),
        Provider("openvino", (OPENVINO,), runtime="openvino"),
        Provider("cuda", (CUDA, CPU), {CUDA: cuda_options}),
        Provider(
            "tensorrt", (TENSORRT, CUDA, CPU), {TENSORRT: tensorrt_options, CUDA: cuda_options}
        ),
    )
}
CHOICES = (AUTO, *PROVIDERS)
