"""Tiny ONNX U-Nets (a few channels) written per session, and ORT predict callables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.nets import SOFTMAX3, UNetSpec, build_onnx, default_card, random_weights, save_model

Predict = Callable[[np.ndarray], np.ndarray]


def ort_predict(path: Path) -> Predict:
    return ort_session_predict(str(path))


def ort_session_predict(model: str | bytes) -> Predict:
    """A predict callable over an ONNX file path or serialized model."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": batch})[0]

    return predict


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _model(model_dir: Path, name: str, spec: UNetSpec, **card_extra: object) -> Path:
    path = model_dir / f"{name}.onnx"
    if not path.exists():
        save_model(path, spec, seed=7, card=default_card(spec, name=name, **card_extra))
    return path


# The paper's geometry (depth 4, halo 92, sizes 16k + 12) with 2 channels at the top level.
VALID = UNetSpec(depth=4, base=2, padding="valid")
VALID_RGB = UNetSpec(depth=4, base=2, in_channels=3, padding="valid")
SAME = UNetSpec(depth=4, base=2, padding="same")
SOFTMAX2 = UNetSpec(depth=2, base=2, out_channels=2, padding="same")


@pytest.fixture(scope="session")
def valid_model(model_dir: Path) -> Path:
    return _model(model_dir, "valid", VALID)


@pytest.fixture(scope="session")
def valid_rgb_model(model_dir: Path) -> Path:
    return _model(model_dir, "valid_rgb", VALID_RGB)


@pytest.fixture(scope="session")
def same_model(model_dir: Path) -> Path:
    return _model(model_dir, "same", SAME)


@pytest.fixture(scope="session")
def softmax3_model(model_dir: Path) -> Path:
    return _model(model_dir, "softmax3", SOFTMAX3)


@pytest.fixture(scope="session")
def softmax2_model(model_dir: Path) -> Path:
    return _model(model_dir, "softmax2", SOFTMAX2)


@pytest.fixture(scope="session")
def bare_model(model_dir: Path) -> Path:
    """A valid U-Net with no embedded card (a user's own export)."""
    import onnx

    path = model_dir / "bare.onnx"
    if not path.exists():
        onnx.save(build_onnx(VALID, random_weights(VALID, seed=7), card=None), str(path))
    return path
