"""Engine: one ONNX Runtime session, its providers, and batch runs.

Providers (``UNET_PROVIDERS``):

- ``auto``: CUDA when ONNX Runtime has it *and* a session on it can be made,
  otherwise the CPU, said in one log line;
- ``cpu``; ``cuda``; ``tensorrt`` (TensorRT, then CUDA for what it cannot
  take): an explicit GPU provider that cannot be used is a ProviderError.

Graph optimisation is ORT_ENABLE_ALL: it includes the NCHWc layout transform
that makes MLAS convolutions run near the machine's sgemm rate on a CPU.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.inference.errors import ModelLoadError, ProviderError
from app.inference.providers import (
    AUTO,
    CHOICES,
    CPU,
    CUDA,
    GPU,
    PROVIDERS,
    Provider,
    ProviderOptions,
)

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Engine:
    """An ONNX model ready to run batches: ``run(N x C x H x W float32) -> first output``.

    path: the ``.onnx`` file. providers: ``auto|cpu|cuda|tensorrt``.
    threads: intra-op threads (0 = ONNX Runtime's choice: one per physical core).
    """

    def __init__(
        self,
        path: str | Path,
        providers: str = AUTO,
        threads: int = 0,
        options: ProviderOptions | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = one per core), got {threads}")
        self.requested = providers
        self.sha256 = file_sha256(self.path)
        # Wherever the service starts (ORT_DISABLE_TELEMETRY=1 in the images does the same):
        # no usage events, no device id written under ~/.cache.
        ort.disable_telemetry_events()
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options.intra_op_num_threads = threads
        self._options.inter_op_num_threads = 1
        self._options.log_severity_level = 4  # failures surface as exceptions, not stderr noise
        self.options = options or ProviderOptions()
        self._session = self._open(providers)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(
                f"{self.path.name}: expected one N x C x H x W input, "
                f"found {[(i.name, i.shape) for i in inputs]}"
            )
        if not outputs or len(outputs[0].shape) != 4:
            raise ModelLoadError(
                f"{self.path.name}: the first output must be N x K x H x W logits, "
                f"found {[(o.name, o.shape) for o in outputs]}"
            )
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.output_names: list[str] = [o.name for o in outputs]
        self.output_shape: list[int | str | None] = list(outputs[0].shape)
        # On a GPU, inputs and outputs are bound on the device: one copy each way per batch.
        gpu = self._session.get_providers()[0] in GPU
        self.bound_device: tuple[str, int] | None = (
            ("cuda", self.options.device_id) if gpu else None
        )

    def _session_on(self, provider: Provider) -> ort.InferenceSession:
        needs_name = self.options.input_shape is not None and len(provider.options) > 0
        chain = provider.session_providers(self.options, self._input_name() if needs_name else "")
        try:
            return ort.InferenceSession(str(self.path), sess_options=self._options, providers=chain)
        except Exception as exc:  # ORT's pybind exceptions derive from Exception only
            raise ModelLoadError(
                f"cannot load model {self.path.name}: {_first_line(exc)}"
            ) from None

    def _open(self, choice: str) -> ort.InferenceSession:
        available = ort.get_available_providers()
        if choice == AUTO:
            if CUDA in available:
                try:
                    session = self._session_on(PROVIDERS["cuda"])
                    if session.get_providers()[0] == CUDA:
                        return session
                    reason = "ONNX Runtime could not start CUDA (driver or libraries missing)"
                except ModelLoadError as exc:
                    reason = str(exc)
            else:
                reason = "this ONNX Runtime build has no CUDA provider"
            log.info("providers=auto: %s; using %s", reason, CPU)
            return self._session_on(PROVIDERS["cpu"])
        if choice not in PROVIDERS:
            raise ProviderError(f"unknown provider {choice!r}: use one of {', '.join(CHOICES)}")
        wanted = PROVIDERS[choice].chain[0]
        if wanted not in available:
            raise ProviderError(
                f"provider {choice!r} asked for, but this ONNX Runtime build offers only "
                f"{', '.join(available)} (install the `gpu` extra, onnxruntime-gpu, on a CUDA host)"
            )
        session = self._session_on(PROVIDERS[choice])
        if session.get_providers()[0] != wanted:
            raise ProviderError(
                f"provider {choice!r} asked for, but ONNX Runtime could not start it "
                f"(GPU driver, CUDA or cuDNN libraries missing?); it would run on "
                f"{session.get_providers()[0]}"
            )
        return session

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, first = preferred."""
        return list(self._session.get_providers())

    @property
    def settings(self) -> dict[str, Any]:
        """The session settings in force (providers, optimisation, threads)."""
        options = self._session.get_session_options()
        return {
            "providers": self.providers,
            "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1],
            "execution_mode": str(options.execution_mode).split(".")[-1],
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
        }

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run N x C x H x W float32 through the model; returns its first output."""
        if self.bound_device is not None:
            return self._run_bound(batch, *self.bound_device)
        out: npt.NDArray[np.float32] = self._session.run(
            [self.output_names[0]], {self.input_name: batch}
        )[0]
        return out

    def _run_bound(
        self, batch: npt.NDArray[np.float32], device: str, device_id: int
    ) -> npt.NDArray[np.float32]:
        """``run`` through IO binding: the input copied to ``device`` once, the output
        allocated there and copied back once (CUDA; any device ONNX Runtime has)."""
        binding = self._session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), device, device_id)
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_names[0], device, device_id)
        self._session.run_with_iobinding(binding)
        out: npt.NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return out

    def _input_name(self) -> str:
        """The graph's input name, before the real session exists (TensorRT's profile)."""
        probe = ort.InferenceSession(str(self.path), providers=[CPU])
        return str(probe.get_inputs()[0].name)
