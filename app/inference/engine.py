"""Engine: one model on one runtime (an ONNX Runtime session, or OpenVINO), its providers,
its precision and batch runs.

Providers (``UNET_PROVIDERS``):

- ``auto``: CUDA when ONNX Runtime has it *and* a session on it can be made,
  else OpenVINO when it is installed, else ONNX Runtime's CPU provider, said in one
  log line;
- ``cpu``; ``openvino``; ``cuda``; ``tensorrt`` (TensorRT, then CUDA for what it cannot
  take): an explicit provider that cannot be used is a ProviderError.

Precision (``UNET_PRECISION``): OpenVINO runs bf16 on CPUs that compute it (openvino.py);
TensorRT builds fp16 engines unless ``fp32``; ONNX Runtime's CPU and CUDA providers run the
model as it is (fp32): ``bf16`` or ``fp16`` asked of them is a ProviderError.

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
from app.inference.openvino import NATIVE, OpenVinoModel, capabilities
from app.inference.providers import (
    AUTO,
    BF16,
    CHOICES,
    CPU,
    CUDA,
    FP16,
    FP32,
    GPU,
    PRECISIONS,
    PROVIDERS,
    TENSORRT,
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
        if self.options.precision not in PRECISIONS:
            raise ProviderError(
                f"unknown precision {self.options.precision!r}: use one of {', '.join(PRECISIONS)}"
            )
        self._session: ort.InferenceSession | None = None
        self._openvino: OpenVinoModel | None = None
        names, in_shapes, self.output_names, out_shapes = self._io(self._open(providers))
        self.input_name: str = names[0]
        self.input_shape: list[int | str | None] = list(in_shapes[0])
        self.output_shape: list[int | str | None] = list(out_shapes[0])
        # On a GPU, inputs and outputs are bound on the device: one copy each way per batch.
        gpu = self.providers[0] in GPU
        self.bound_device: tuple[str, int] | None = (
            ("cuda", self.options.device_id) if gpu else None
        )
        self.precision = self._precision()

    def _io(
        self, opened: ort.InferenceSession | OpenVinoModel
    ) -> tuple[list[str], list[list[int | str | None]], list[str], list[list[int | str | None]]]:
        """Keep the opened model; its input names and shapes, output names and shapes,
        checked: one N x C x H x W input, N x K x H x W logits first."""
        if isinstance(opened, OpenVinoModel):
            self._openvino = opened
            names = opened.input_names
            in_shapes: list[list[int | str | None]] = [list(s) for s in opened.input_shapes]
            out_names = opened.output_names
            out_shapes: list[list[int | str | None]] = [list(s) for s in opened.output_shapes]
        else:
            self._session = opened
            inputs, outputs = opened.get_inputs(), opened.get_outputs()
            names, in_shapes = [i.name for i in inputs], [list(i.shape) for i in inputs]
            out_names, out_shapes = [o.name for o in outputs], [list(o.shape) for o in outputs]
        if len(names) != 1 or len(in_shapes[0]) != 4:
            raise ModelLoadError(
                f"{self.path.name}: expected one N x C x H x W input, "
                f"found {list(zip(names, in_shapes, strict=True))}"
            )
        if not out_shapes or len(out_shapes[0]) != 4:
            raise ModelLoadError(
                f"{self.path.name}: the first output must be N x K x H x W logits, "
                f"found {list(zip(out_names, out_shapes, strict=True))}"
            )
        return names, in_shapes, out_names, out_shapes

    def _session_on(self, provider: Provider) -> ort.InferenceSession:
        needs_name = self.options.input_shape is not None and len(provider.options) > 0
        chain = provider.session_providers(self.options, self._input_name() if needs_name else "")
        try:
            return ort.InferenceSession(str(self.path), sess_options=self._options, providers=chain)
        except Exception as exc:  # ORT's pybind exceptions derive from Exception only
            raise ModelLoadError(
                f"cannot load model {self.path.name}: {_first_line(exc)}"
            ) from None

    def _open(self, choice: str) -> ort.InferenceSession | OpenVinoModel:
        available = ort.get_available_providers()
        if choice == AUTO:
            if CUDA in available:
                try:
                    session = self._session_on(PROVIDERS["cuda"])
                    if session.get_providers()[0] == CUDA:
                        return self._checked(session)
                    reason = "ONNX Runtime could not start CUDA (driver or libraries missing)"
                except ModelLoadError as exc:
                    reason = str(exc)
            else:
                reason = "this ONNX Runtime build has no CUDA provider"
            # OpenVINO where it is the faster engine: bf16 on a CPU that computes it (2.1x
            # ONNX Runtime fp32 here); in fp32 it is no faster than ONNX Runtime (0.92x).
            native = capabilities()
            if native is None:
                why = "OpenVINO is not installed"
            elif NATIVE[BF16] not in native:
                why = "this CPU computes no bf16 (neither AVX512-BF16 nor AMX)"
            elif self.options.precision not in (AUTO, BF16):
                why = f"precision {self.options.precision} asked for"
            else:
                log.info("providers=auto: %s; using OpenVINO on the CPU", reason)
                return self._on_openvino()
            log.info("providers=auto: %s and %s; using %s", reason, why, CPU)
            return self._checked(self._session_on(PROVIDERS["cpu"]))
        if choice not in PROVIDERS:
            raise ProviderError(f"unknown provider {choice!r}: use one of {', '.join(CHOICES)}")
        if PROVIDERS[choice].runtime == "openvino":
            return self._on_openvino()
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
        return self._checked(session)

    def _on_openvino(self) -> OpenVinoModel:
        return OpenVinoModel(self.path, self._options.intra_op_num_threads, self.options.precision)

    def _checked(self, session: ort.InferenceSession) -> ort.InferenceSession:
        """The session, if it runs the precision asked for (ONNX Runtime runs the model as
        it is; TensorRT alone builds fp16)."""
        asked, first = self.options.precision, session.get_providers()[0]
        if asked == BF16 or (asked == FP16 and first != TENSORRT):
            raise ProviderError(
                f"precision {asked!r} asked for, but ONNX Runtime's {first} runs the model in "
                "fp32: bf16 runs on OpenVINO (UNET_PROVIDERS=openvino), fp16 on TensorRT"
            )
        return session

    def _precision(self) -> str:
        if self._openvino is not None:
            return self._openvino.precision
        fp16 = self.providers[0] == TENSORRT and self.options.trt_fp16
        return FP16 if fp16 and self.options.precision != FP32 else FP32

    @property
    def providers(self) -> list[str]:
        """The execution providers actually used, first = preferred."""
        if self._openvino is not None:
            return self._openvino.providers
        return list(self._ort.get_providers())

    @property
    def _ort(self) -> ort.InferenceSession:
        assert self._session is not None
        return self._session

    @property
    def settings(self) -> dict[str, Any]:
        """The settings in force (providers, precision, optimisation, threads)."""
        if self._openvino is not None:
            return self._openvino.settings
        options = self._ort.get_session_options()
        return {
            "providers": self.providers,
            "precision": self.precision,
            "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1],
            "execution_mode": str(options.execution_mode).split(".")[-1],
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
        }

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        if self._openvino is not None:
            return self._openvino.metadata
        return dict(self._ort.get_modelmeta().custom_metadata_map)

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run N x C x H x W float32 through the model; returns its first output."""
        if self._openvino is not None:
            return self._openvino.run(batch)
        if self.bound_device is not None:
            return self._run_bound(batch, *self.bound_device)
        out: npt.NDArray[np.float32] = self._ort.run(
            [self.output_names[0]], {self.input_name: batch}
        )[0]
        return out

    def _run_bound(
        self, batch: npt.NDArray[np.float32], device: str, device_id: int
    ) -> npt.NDArray[np.float32]:
        """``run`` through IO binding: the input copied to ``device`` once, the output
        allocated there and copied back once (CUDA; any device ONNX Runtime has)."""
        binding = self._ort.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), device, device_id)
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_names[0], device, device_id)
        self._ort.run_with_iobinding(binding)
        out: npt.NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return out

    def _input_name(self) -> str:
        """The graph's input name, before the real session exists (TensorRT's profile)."""
        probe = ort.InferenceSession(str(self.path), providers=[CPU])
        return str(probe.get_inputs()[0].name)
