"""Engine: providers with fallback, batch runs, sha256."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.inference import Engine, ProviderError

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
def test_auto_falls_back_to_cpu_with_one_log_line(
    valid_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.inference.engine"):
        engine = Engine(valid_model, "auto")
    assert engine.providers == ["CPUExecutionProvider"]
    lines = [r.getMessage() for r in caplog.records if r.name == "app.inference.engine"]
    assert len(lines) == 1
    assert "using CPUExecutionProvider" in lines[0]


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has CUDA")
@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_explicit_gpu_provider_that_cannot_be_used_is_an_error(
    valid_model: Path, choice: str
) -> None:
    with pytest.raises(ProviderError, match=f"provider '{choice}' asked for"):
        Engine(valid_model, choice)  # type: ignore[arg-type]


def test_unknown_provider(valid_model: Path) -> None:
    with pytest.raises(ProviderError, match="use one of auto, cpu, cuda, tensorrt"):
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
