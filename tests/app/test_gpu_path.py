"""The GPU path, tested where there is no GPU: provider options, IO binding, fp16 models,
the fixed tile shape at start-up. (The GPU itself: bench/gpu.py, on the device machine.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnxruntime.transformers.float16 import convert_float_to_float16
from PIL import Image

from app.inference import load_model
from app.inference.providers import (
    CPU,
    CUDA,
    PROVIDERS,
    TENSORRT,
    ProviderOptions,
    cuda_options,
    tensorrt_options,
)
from app.main import StartupError, create_app, provider_options
from app.settings import Settings
from tests.conftest import settings as app_settings
from tests.nets import UNetSpec, default_card, save_model
from tests.samples import png


def test_cuda_options() -> None:
    options = cuda_options(ProviderOptions(device_id=2, cudnn_conv_algo_search="HEURISTIC"), "x")
    assert options == {
        "device_id": "2",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    }


def test_tensorrt_options_cache_fp16_and_one_profile(tmp_path: Path) -> None:
    o = ProviderOptions(trt_cache_dir=tmp_path, trt_fp16=True, input_shape=(4, 1, 1084, 1084))
    options = tensorrt_options(o, "image")
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path)
    assert options["trt_engine_cache_enable"] == options["trt_timing_cache_enable"] == "True"
    assert options["trt_fp16_enable"] == "True"
    for bound in ("min", "opt", "max"):  # one shape: one engine for every image
        assert options[f"trt_profile_{bound}_shapes"] == "image:4x1x1084x1084"
    bare = tensorrt_options(ProviderOptions(trt_fp16=False), "image")
    assert bare == {"device_id": "0", "trt_fp16_enable": "False"}


def test_the_table_chains_providers_with_their_options() -> None:
    chain = PROVIDERS["tensorrt"].session_providers(ProviderOptions(device_id=1), "x")
    assert [name for name, _ in chain] == [TENSORRT, CUDA, CPU]
    assert chain[1][1]["device_id"] == "1"
    assert chain[2][1] == {}
    assert PROVIDERS["cpu"].session_providers(ProviderOptions(), "x") == [(CPU, {})]


def test_settings_read_the_options() -> None:
    s = Settings(cudnn_conv_algo_search="heuristic", device_id=1, trt_cache_dir="/tmp/trt")  # type: ignore[arg-type]
    assert (s.cudnn_conv_algo_search, s.device_id, str(s.trt_cache_dir)) == (
        "HEURISTIC",
        1,
        "/tmp/trt",
    )


def test_tensorrt_gets_the_fixed_tile_batch_as_its_profile(
    binary_model: Path, tmp_path: Path
) -> None:
    settings = Settings(model_path=binary_model, providers="tensorrt", trt_cache_dir=tmp_path / "c")
    options = provider_options(settings)
    card = load_model(binary_model, "cpu").card
    side = card.geometry().valid_size_at_most(1084)
    assert options.input_shape == (4, card.in_channels, side, side)  # GPU defaults 1084 x 4
    assert (tmp_path / "c").is_dir()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(StartupError, match="UNET_TRT_CACHE_DIR"):
        provider_options(
            Settings(model_path=binary_model, providers="tensorrt", trt_cache_dir=blocked / "c")
        )


def test_io_binding_only_on_a_gpu_and_it_gives_the_same_numbers(binary_model: Path) -> None:
    engine = load_model(binary_model, "cpu").engine
    assert engine.bound_device is None  # the CPU runs the plain path
    batch = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    plain = engine.run(batch)
    engine.bound_device = ("cpu", 0)  # the binding code, on the device this machine has
    np.testing.assert_array_equal(engine.run(batch), plain)


def test_an_fp16_model_is_served_with_float32_in_and_out(
    binary_model: Path, tmp_path: Path
) -> None:
    """An fp16 graph (weights and arithmetic) with float32 inputs and outputs, as
    ``python -m training export --fp16`` writes it; the card says so."""
    spec = UNetSpec(depth=2, base=2)
    fp32 = tmp_path / "fp32.onnx"
    save_model(fp32, spec, seed=3, card=default_card(spec, name="m"))
    half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    fp16 = tmp_path / "fp16.onnx"
    onnx.save(half, str(fp16))
    fp16.with_suffix(".json").write_text(json.dumps(default_card(spec, name="m", precision="fp16")))
    image = np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8)
    answers = {}
    for path in (fp32, fp16):
        with TestClient(create_app(app_settings(path))) as client:
            answer = client.post("/segment?format=probability", content=png(image))
            assert answer.status_code == 200
            pixels = np.asarray(Image.open(io.BytesIO(answer.content)), dtype=np.float64)
            answers[path.stem] = pixels / 65535
    assert np.abs(answers["fp16"] - answers["fp32"]).max() < 1e-2
