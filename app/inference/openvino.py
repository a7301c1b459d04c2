"""The OpenVINO runtime on the CPU, behind the same face as an ONNX Runtime session.

Why the runtime itself and not ONNX Runtime's OpenVINO provider: see providers.py.

- Precision: ``auto`` is bf16 where the CPU computes it natively (AVX512-BF16 or AMX, which
  OpenVINO reports as ``BF16`` in ``OPTIMIZATION_CAPABILITIES``), else fp32; ``fp32`` forces
  full precision; ``bf16`` or ``fp16`` on a CPU without them is a ProviderError.
- Shapes: a shape seen a second time gets a model compiled for it alone (static: a dynamic
  compile runs 20-60 % slower here), at most ``SHAPES`` of them, the most used; every
  other shape runs on one dynamic compile. The service's tiles repeat; the edge tiles of blocks of a
  large image mostly do not, and compiling each (0.1-0.3 s) would cost more than it saves.
- Threads: ``threads`` = ``INFERENCE_NUM_THREADS`` (0: OpenVINO's choice, one per physical
  core); the LATENCY hint: one stream, every thread on the running batch. An infer request
  is not thread-safe: runs take turns (one stream runs one batch at a time anyway).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.inference.errors import ModelLoadError, ProviderError
from app.inference.providers import AUTO, BF16, FP16, FP32, OPENVINO, PRECISIONS

log = logging.getLogger(__name__)

SHAPES = 4  # compiled shapes kept (each holds its own intermediate buffers)
HINTS = {FP32: "f32", BF16: "bf16", FP16: "f16"}
NATIVE = {BF16: "BF16", FP16: "FP16"}  # OpenVINO's capability names


def runtime() -> Any:
    """The ``openvino`` module, imported without its model-conversion tool: ``import
    openvino`` imports ``openvino.tools.ovc``, whose telemetry (openvino-telemetry, on unless
    a file in $HOME says no) writes ``~/intel/openvino_ga_cid`` and counters at once and
    would report conversions to Google Analytics. We convert nothing, and a hospital's
    service phones no one: ``ImportError`` for it, which ``openvino/__init__.py`` ignores.
    Raises ImportError when OpenVINO is not installed."""
    sys.modules.setdefault("openvino.tools.ovc", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def capabilities() -> list[str] | None:
    """What OpenVINO says the CPU computes natively (``BF16``, ``FP16``, ``INT8``...), or
    None when OpenVINO is not installed."""
    try:
        ov = runtime()
    except ImportError:
        return None
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def choose_precision(asked: str, capabilities: list[str]) -> tuple[str, str]:
    """(precision, why) for ``asked`` on a CPU with OpenVINO's ``capabilities``."""
    if asked not in PRECISIONS:
        raise ProviderError(f"unknown precision {asked!r}: use one of {', '.join(PRECISIONS)}")
    if asked == AUTO:
        if NATIVE[BF16] in capabilities:
            return BF16, "this CPU computes bf16 natively (AVX512-BF16 or AMX)"
        return FP32, "this CPU has neither AVX512-BF16 nor AMX"
    if asked in NATIVE and NATIVE[asked] not in capabilities:
        raise ProviderError(
            f"precision {asked!r} asked for, but this CPU does not compute it natively "
            f"(OpenVINO reports {', '.join(capabilities)}); use fp32 or auto"
        )
    return asked, "asked for"


class OpenVinoModel:
    """An ONNX model on OpenVINO's CPU plugin: ``run(N x C x H x W float32) -> first output``."""

    def __init__(self, path: Path, threads: int = 0, precision: str = AUTO) -> None:
        try:
            ov = runtime()
        except ImportError:
            raise ProviderError(
                "provider 'openvino' asked for, but OpenVINO is not installed "
                "(the `cpu` extra installs it)"
            ) from None
        self._core = ov.Core()
        capabilities = list(self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision, why = choose_precision(precision, capabilities)
        log.info("OpenVINO on the CPU: precision %s (%s)", self.precision, why)
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own kinds
            text = str(exc).strip().splitlines()
            raise ModelLoadError(
                f"cannot load model {path.name}: {text[0] if text else type(exc).__name__}"
            ) from None
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self.threads = threads
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._dynamic: Any = None
        self._seen: Counter[tuple[int, ...]] = Counter()
        self._lock = threading.Lock()
        inputs, outputs = self._model.inputs, self._model.outputs
        self.input_names = [i.any_name for i in inputs]
        self.input_shapes = [_dims(i.get_partial_shape()) for i in inputs]
        self.output_names = [o.any_name for o in outputs]
        self.output_shapes = [_dims(o.get_partial_shape()) for o in outputs]

    @property
    def providers(self) -> list[str]:
        return [OPENVINO]

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "providers": self.providers,
            "precision": self.precision,
            "performance_hint": "LATENCY",
            "inference_num_threads": self.threads,
        }

    @property
    def metadata(self) -> dict[str, str]:
        """The ONNX file's ``metadata_props`` (OpenVINO keeps them under ``framework``)."""
        info = self._model.get_rt_info()
        if "framework" not in info:
            return {}
        keys = list(info["framework"].keys())
        return {k: str(self._model.get_rt_info(["framework", k]).astype(str)) for k in keys}

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request for ``shape``: its own compile once it has come twice and is
        used more than twice as often as the least used one kept (so shapes taking turns
        do not evict each other for ever), else the dynamic one."""
        if len(self._seen) > 10_000:  # the one-off shapes of a long run: forget them
            self._seen = Counter({s: self._seen[s] for s in self._compiled})
        self._seen[shape] += 1
        if shape in self._compiled:
            return self._compiled[shape]
        count = self._seen[shape]
        least = min(self._compiled, key=self._seen.__getitem__, default=shape)
        full = len(self._compiled) >= SHAPES
        if count >= 2 and (not full or count > 2 * self._seen[least]):
            if full:
                del self._compiled[least]
            model = self._model.clone()
            model.reshape({0: list(shape)})
            self._compiled[shape] = self._compile(model, shape)
            return self._compiled[shape]
        if self._dynamic is None:
            self._dynamic = self._compile(self._model, "any")
        return self._dynamic

    def _compile(self, model: Any, shape: object) -> Any:
        try:
            return self._core.compile_model(model, "CPU", self._config).create_infer_request()
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise ModelLoadError(
                f"OpenVINO cannot compile the model for input {shape}: "
                f"{text[0] if text else type(exc).__name__}"
            ) from None

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            request = self._request(tuple(batch.shape))
            request.infer({0: batch})
            out: npt.NDArray[np.float32] = np.array(request.get_output_tensor(0).data, copy=True)
        return out


def _dims(shape: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in shape]
