"""``python -m app.models check``: whether and how the service would serve a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx

from app.inference import load_model
from tests.conftest import REPO
from tests.nets import BINARY, build_onnx, default_card, random_weights


def check(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.models", "check", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_a_model_without_card_gets_the_warning_and_a_sidecar_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "users_net.onnx"
    onnx.save(build_onnx(BINARY, random_weights(BINARY, seed=7), card=None), str(path))
    result = check(str(path))
    assert result.returncode == 0, result.stderr
    assert "INFERRED" in result.stdout
    assert "WARNING the service would log: model users_net has no card" in result.stdout
    assert "--sidecar" in result.stdout
    assert not path.with_suffix(".json").exists()

    written = check(str(path), "--sidecar")
    assert f"wrote {path.with_suffix('.json')}" in written.stdout
    sidecar = json.loads(path.with_suffix(".json").read_text())
    inferred = load_model(path, "cpu")
    assert inferred.card_source == "sidecar"
    assert sidecar == inferred.card.model_dump(exclude_none=True, include=set(sidecar))
    known = default_card(BINARY)  # the geometry the network was built with
    for field in ("padding", "halo", "size_multiple", "size_offset", "min_size"):
        assert sidecar[field] == known[field], field

    again = check(str(path))
    assert "card from the sidecar users_net.json" in again.stdout
    assert "WARNING" not in again.stdout
    assert "modalities: the DICOM modalities" in again.stdout  # still not given


def test_a_model_the_service_would_refuse_says_why(tmp_path: Path, binary_model: Path) -> None:
    path = tmp_path / "half.onnx"
    path.write_bytes(binary_model.read_bytes()[:500])
    result = check(str(path))
    assert result.returncode == 1
    assert "half.onnx: the service would NOT serve it" in result.stderr


def test_an_embedded_card_is_shown_field_by_field(binary_model: Path) -> None:
    result = check(str(binary_model))
    assert result.returncode == 0
    assert "card from the model's own metadata" in result.stdout
    assert '  classes: ["background", "foreground"]' in result.stdout
    assert "WARNING" not in result.stdout
