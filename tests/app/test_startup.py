"""Start-up failures: one clear log line, a non-zero exit, no traceback wall."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.conftest import REPO, free_port

TIMEOUT_S = 90


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    return subprocess.run(
        [*command, "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_fails_clearly(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    failures = [line for line in output.splitlines() if "start-up failed" in line]
    assert len(failures) == 1, output
    for word in words:
        assert word in failures[0], output


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"UNET_MAX_QUEUE": "-1"}, ["UNET_MAX_QUEUE"]),
        ({"UNET_PROVIDERS": "gpu"}, ["UNET_PROVIDERS", "auto"]),
        ({"UNET_PRECISION": "fp8"}, ["UNET_PRECISION", "bf16"]),
        # ONNX Runtime's CPU provider runs fp32 only: a clear refusal, not a silent fp32
        ({"UNET_PROVIDERS": "cpu", "UNET_PRECISION": "bf16"}, ["bf16", "OpenVINO"]),
        ({"UNET_LOG_FORMAT": "xml"}, ["UNET_LOG_FORMAT"]),
        ({"UNET_MAX_UPLOAD_BYTES": "lots"}, ["UNET_MAX_UPLOAD_BYTES"]),
        ({"UNET_TILE_SIZE": "8"}, ["UNET_TILE_SIZE", "minimum"]),
        ({"UNET_CUDNN_CONV_ALGO_SEARCH": "fastest"}, ["UNET_CUDNN_CONV_ALGO_SEARCH", "HEURISTIC"]),
        ({"UNET_DEVICE_ID": "-1"}, ["UNET_DEVICE_ID"]),
        ({"UNET_TRT_FP16": "maybe"}, ["UNET_TRT_FP16"]),
    ],
)
def test_bad_settings_stop_start_up(
    binary_model: Path, env: dict[str, str], words: list[str]
) -> None:
    assert_fails_clearly(start({"UNET_MODEL_PATH": str(binary_model), **env}), *words)


def test_missing_model_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    assert_fails_clearly(start({"UNET_MODEL_PATH": str(missing)}), "UNET_MODEL_PATH", "not found")


def test_corrupt_model_stops_start_up(tmp_path: Path, binary_model: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(binary_model.read_bytes()[: binary_model.stat().st_size // 2])
    assert_fails_clearly(start({"UNET_MODEL_PATH": str(corrupt)}), "corrupt.onnx")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_explicit_cuda_without_cuda_stops_start_up(binary_model: Path) -> None:
    env = {"UNET_MODEL_PATH": str(binary_model), "UNET_PROVIDERS": "cuda"}
    assert_fails_clearly(start(env), "cuda")


def test_json_log_format_applies_to_the_failure_line(tmp_path: Path) -> None:
    result = start({"UNET_MODEL_PATH": str(tmp_path / "x.onnx"), "UNET_LOG_FORMAT": "json"})
    assert_fails_clearly(result, '"level": "error"')
