"""Engine: providers with fallback, batch runs, sha256."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.inference import Engine, ProviderError, ProviderOptions
from app.inference.openvino import capabilities

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_cpu_engine_runs_a_batch(valid_model: Path) -> None:
    engine = Engine(valid_model, "cpu", threads=1)
    out = engine.run(np.zeros((3, 1, 204, 220), dtype=np.float32))
    assert out.shape == (3, 1, 20, 36)
    assert out.dtype == np.float32
    assert engine.providers == ["CPUExecutionProvider"]
    assert (engine.input_name, engine.output_names) == ("image", ["logits"])


def test_sha256_is_the_files(valid_model: Path) -> None:
    assert Engine(valid_model, "cpu").sha256 == hashlib.sha256(valid_model.read_bytes()).hexdigest()


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has CUDA: the fallback path is not taken")
def test_auto_falls_back_to_openvino_with_one_log_line(
    valid_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    native = capabilities()
    if native is None:
        pytest.skip("OpenVINO is not installed (the `cpu` extra has it)")
    if "BF16" not in native:
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: auto keeps ONNX Runtime here")
    with caplog.at_level(logging.INFO, logger="app.inference.engine"):
        engine = Engine(valid_model, "auto")
    assert (engine.providers, engine.precision) == (["OpenVINO"], "bf16")
    lines = [r.getMessage() for r in caplog.records if r.name == "app.inference.engine"]
    assert len(lines) == 1
    assert "using OpenVINO on the CPU" in lines[0]


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has CUDA: the fallback path is not taken")
def test_auto_without_openvino_falls_back_to_onnx_runtime_cpu(
    valid_model: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with caplog.at_level(logging.INFO, logger="app.inference.engine"):
        engine = Engine(valid_model, "auto")
    assert engine.providers == ["CPUExecutionProvider"]
    assert engine.precision == "fp32"
    lines = [r.getMessage() for r in caplog.records if r.name == "app.inference.engine"]
    assert len(lines) == 1
    assert "OpenVINO is not installed; using CPUExecutionProvider" in lines[0]


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has CUDA: the fallback path is not taken")
def test_auto_keeps_onnx_runtime_where_openvino_would_run_fp32(
    valid_model: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO fp32 is no faster than ONNX Runtime (docs/performance.md): auto takes it
    only for bf16, so fp32 asked for, or a CPU without bf16, stays on ONNX Runtime."""
    forced = Engine(valid_model, "auto", options=ProviderOptions(precision="fp32"))
    assert (forced.providers, forced.precision) == (["CPUExecutionProvider"], "fp32")
    monkeypatch.setattr("app.inference.engine.capabilities", lambda: ["FP32", "INT8"])
    with caplog.at_level(logging.INFO, logger="app.inference.engine"):
        engine = Engine(valid_model, "auto")
    assert engine.providers == ["CPUExecutionProvider"]
    lines = [r.getMessage() for r in caplog.records if r.name == "app.inference.engine"]
    assert lines
    assert "computes no bf16" in lines[-1]


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has CUDA")
@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_explicit_gpu_provider_that_cannot_be_used_is_an_error(
    valid_model: Path, choice: str
) -> None:
    with pytest.raises(ProviderError, match=f"provider '{choice}' asked for"):
        Engine(valid_model, choice)  # type: ignore[arg-type]


def test_unknown_provider(valid_model: Path) -> None:
    with pytest.raises(ProviderError, match="use one of auto, cpu, openvino, cuda, tensorrt"):
        Engine(valid_model, "tpu")  # type: ignore[arg-type]


def test_negative_threads(valid_model: Path) -> None:
    with pytest.raises(ValueError, match="threads must be >= 0"):
        Engine(valid_model, "cpu", threads=-1)


def test_metadata_holds_the_card(valid_model: Path) -> None:
    assert '"halo": 92' in Engine(valid_model, "cpu").metadata["unet"]


def test_settings_report_full_optimisation_and_threads(valid_model: Path) -> None:
    settings = Engine(valid_model, "cpu", threads=2).settings
    assert settings["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert settings["intra_op_num_threads"] == 2
    assert settings["providers"] == ["CPUExecutionProvider"]
