"""OpenVINO as an engine: the same answers as ONNX Runtime in fp32, bf16 within its stated
tolerance, precisions checked against what the CPU computes, and the ONNX card read through it.

The bf16 checks need a CPU with AVX512-BF16 or AMX; without one they skip and say so.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.inference import Engine, Predictor, ProviderError, ProviderOptions, load_model
from app.inference.openvino import SHAPES, capabilities, choose_precision

NATIVE = capabilities()
if NATIVE is None:
    pytest.skip("OpenVINO is not installed (the `cpu` extra has it)", allow_module_level=True)
HAS_BF16 = "BF16" in NATIVE
needs_bf16 = pytest.mark.skipif(
    not HAS_BF16, reason="this CPU has neither AVX512-BF16 nor AMX: OpenVINO runs no bf16 here"
)


def engine(path: Path, providers: str, precision: str = "auto") -> Engine:
    return Engine(path, providers, threads=1, options=ProviderOptions(precision=precision))


def image(seed: int, shape: tuple[int, ...] = (2, 1, 204, 220)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_openvino_fp32_gives_onnx_runtimes_answer(valid_model: Path) -> None:
    ort_engine, ov_engine = engine(valid_model, "cpu"), engine(valid_model, "openvino", "fp32")
    assert ov_engine.providers == ["OpenVINO"]
    assert ov_engine.precision == "fp32"
    for seed, shape in enumerate([(2, 1, 204, 220), (1, 1, 188, 188), (3, 1, 220, 204)]):
        batch = image(seed, shape)
        expected, got = ort_engine.run(batch), ov_engine.run(batch)
        assert got.shape == expected.shape
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_card_is_read_through_openvino(valid_model: Path) -> None:
    """OpenVINO keeps the ONNX metadata_props: the same card, the same geometry."""
    via_ort, via_ov = (
        load_model(valid_model, "cpu"),
        load_model(valid_model, "openvino", options=ProviderOptions(precision="fp32")),
    )
    assert via_ov.engine.metadata == via_ort.engine.metadata != {}
    assert via_ov.card == via_ort.card
    assert via_ov.card_source == via_ort.card_source == "embedded"
    assert via_ov.engine.input_shape[1] == 1
    assert via_ov.engine.output_shape[1] == 1


def test_every_shape_and_a_full_cache_still_give_the_right_answer(valid_model: Path) -> None:
    ort_engine, ov_engine = engine(valid_model, "cpu"), engine(valid_model, "openvino", "fp32")
    shapes = [(1, 1, 188 + 16 * i, 188) for i in range(SHAPES + 2)]
    for shape in shapes + shapes + shapes[:2]:  # dynamic, then static, then again after eviction
        batch = image(len(shape), shape)
        np.testing.assert_allclose(ov_engine.run(batch), ort_engine.run(batch), atol=1e-4)


def test_runs_from_several_threads_do_not_mix(valid_model: Path) -> None:
    ov_engine = engine(valid_model, "openvino", "fp32")
    batches = [image(seed) for seed in range(6)]
    expected = [ov_engine.run(b) for b in batches]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = ov_engine.run(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(got[i], want)


@needs_bf16
def test_auto_is_bf16_here_and_stays_close_to_fp32(valid_model: Path) -> None:
    fp32, bf16 = engine(valid_model, "openvino", "fp32"), engine(valid_model, "openvino")
    assert bf16.precision == "bf16"
    assert bf16.settings["precision"] == "bf16"
    batch = image(7)
    exact, rounded = fp32.run(batch), bf16.run(batch)
    assert not np.array_equal(exact, rounded)  # it is bf16: the answers move a little
    # bf16 keeps 8 bits of mantissa: errors of ~1 % of the logits' range at this depth.
    scale = float(np.abs(exact).max())
    assert float(np.abs(rounded - exact).max()) <= 0.05 * scale


def test_precisions_follow_what_the_cpu_computes() -> None:
    assert choose_precision("auto", ["FP32", "BF16", "INT8"])[0] == "bf16"
    assert choose_precision("auto", ["FP32", "INT8"])[0] == "fp32"
    assert choose_precision("fp32", ["FP32", "BF16"])[0] == "fp32"
    assert choose_precision("fp16", ["FP32", "FP16"])[0] == "fp16"
    with pytest.raises(ProviderError, match="precision 'bf16' asked for, but this CPU"):
        choose_precision("bf16", ["FP32", "INT8"])
    with pytest.raises(ProviderError, match="unknown precision 'fp8'"):
        choose_precision("fp8", ["FP32"])


@pytest.mark.skipif(HAS_BF16, reason="this CPU computes bf16: the refusal cannot be seen here")
def test_bf16_on_a_cpu_without_it_is_refused(valid_model: Path) -> None:
    with pytest.raises(ProviderError, match="does not compute it natively"):
        engine(valid_model, "openvino", "bf16")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_onnx_runtime_cpu_refuses_reduced_precision(valid_model: Path, precision: str) -> None:
    with pytest.raises(ProviderError, match=f"precision '{precision}' asked for, but ONNX"):
        engine(valid_model, "cpu", precision)


def test_unknown_precision_is_refused(valid_model: Path) -> None:
    with pytest.raises(ProviderError, match="unknown precision 'half'"):
        engine(valid_model, "cpu", "half")


def test_the_predictor_on_openvino_matches_onnx_runtime(valid_model: Path) -> None:
    """The whole overlap-tile path, not only one batch: fp32 probabilities agree."""
    ort_model = load_model(valid_model, "cpu")
    ov_model = load_model(valid_model, "openvino", options=ProviderOptions(precision="fp32"))
    picture = (np.random.default_rng(3).random((301, 257)) * 255).astype(np.uint8)
    expected = Predictor(ort_model.engine.run, ort_model.card, tile_size=220).probabilities(
        picture
    )[0]
    got = Predictor(ov_model.engine.run, ov_model.card, tile_size=220).probabilities(picture)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_shapes_taking_turns_are_not_compiled_again_and_again(
    valid_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More recurring shapes than compiles kept: the most used keep theirs, the rest run on
    the dynamic compile, and nothing is compiled anew each round (each costs 0.1-0.3 s)."""
    ov_engine = engine(valid_model, "openvino", "fp32")
    model = ov_engine._openvino
    assert model is not None
    compiled: list[object] = []
    real = model._compile
    monkeypatch.setattr(model, "_compile", lambda m, s: compiled.append(s) or real(m, s))
    shapes = [(1, 1, 188 + 16 * i, 188) for i in range(SHAPES + 2)]
    for _ in range(5):
        for shape in shapes:
            ov_engine.run(image(0, shape))
    assert len(compiled) <= SHAPES + 1  # one each for SHAPES shapes, one dynamic
    assert compiled.count("any") == 1


def test_openvino_writes_nothing_into_home_and_reports_to_no_one(
    valid_model: Path, tmp_path: Path
) -> None:
    """``import openvino`` alone would start its telemetry (``~/intel/openvino_ga_cid``);
    the engine keeps it out (app/inference/openvino.py, ``runtime``)."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys; from app.inference import Engine, ProviderOptions; "
        "e = Engine(sys.argv[1], 'openvino', options=ProviderOptions(precision='fp32')); "
        "print(e.providers[0]); import openvino_telemetry, sys as s; "
        "print('openvino.tools.ovc' in s.modules and s.modules['openvino.tools.ovc'] is not None)"
    )
    # ORT_DISABLE_TELEMETRY=1 as in the images: else onnxruntime's import writes a device id
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ORT_DISABLE_TELEMETRY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(valid_model)],
        capture_output=True, text=True, check=True, env=env, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert out.stdout.split() == ["OpenVINO", "False"]
    assert list(home.iterdir()) == []
