"""The shipped default model reproduces, through the service's tiler, the metrics its card records.

Reads ../shared/data/isbi2012 (skips with the reason when absent). The card
embedded in model/unet.onnx names its validation slices and the metrics the
training run measured on them; a change that breaks the pipeline or the model
(normalisation, tiling, export, thresholds) moves these numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.inference import LoadedModel, Predictor, load_model
from training.data import Sample, load_samples
from training.evaluate import evaluate_masks, objects_rand_error, predictor_masks

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "model" / "unet.onnx"
ISBI = REPO.parent / "shared" / "data" / "isbi2012" / "train"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not MODEL.is_file(), reason=f"no shipped model at {MODEL}"),
    pytest.mark.skipif(
        not (ISBI / "image").is_dir(),
        reason=f"ISBI 2012 data not found at {ISBI} (see ../shared/data/isbi2012/README.md)",
    ),
]


def validation_samples(model: LoadedModel) -> list[Sample]:
    """The 5 validation slices the card names, labelled as the card says."""
    card = model.card.model_extra or {}
    labels = card["labels"]
    return load_samples(
        ISBI,
        names=card["training"]["split"]["val"],
        label_mode=labels["mode"],
        foreground_value=labels["foreground_value"],
        num_classes=len(model.card.classes),
    )


def test_shipped_model_reproduces_its_validation_metrics() -> None:
    model = load_model(MODEL, "cpu")
    card = model.card.model_extra or {}
    recorded = card["validation"]
    split = card["training"]["split"]
    names = split.get("select") or split["val"]  # the images that chose its epoch
    labels = card["labels"]
    samples = load_samples(
        ISBI,
        names=names,
        label_mode=labels["mode"],
        foreground_value=labels["foreground_value"],
        num_classes=len(model.card.classes),
    )
    assert len(samples) == len(names)
    predictor = Predictor(model.engine.run, model.card)
    metrics = evaluate_masks(
        predictor_masks(predictor), samples, model.card.classes, labels["objects"]
    )
    for key in ("pixel_error", "rand_error", "mean_dice", "mean_iou"):
        assert metrics[key] == pytest.approx(recorded[key], abs=1e-3), key
    # And it is a real model: far better than chance on membranes.
    assert metrics["dice"]["membrane"] > 0.75
    assert metrics["pixel_error"] < 0.12


def test_the_calibrated_card_beats_0_5_and_finds_the_cells() -> None:
    """The card's calibrated threshold and objects recipe (python -m training calibrate)."""
    model = load_model(MODEL, "cpu")
    card = model.card.model_extra or {}
    labels = card["labels"]
    samples = validation_samples(model)
    predictor = Predictor(model.engine.run, model.card)
    threshold = model.card.threshold
    assert threshold is not None
    at = {
        t: evaluate_masks(
            predictor_masks(predictor, threshold=t), samples, model.card.classes, labels["objects"]
        )
        for t in (0.5, threshold)
    }
    assert at[threshold]["pixel_error"] < at[0.5]["pixel_error"]
    assert model.card.objects.method == "watershed"
    assert objects_rand_error(predictor, samples, threshold, labels["objects"]) <= 0.04


INT8 = REPO / "model" / "unet-int8.onnx"


@pytest.mark.skipif(not INT8.is_file(), reason=f"no INT8 variant at {INT8}")
def test_the_int8_variant_is_within_its_gate_of_the_float_model() -> None:
    """model/unet-int8.onnx (python -m training quantize): its card's figures are what it
    gives now, and they are within the recorded tolerance of the float model's.

    The card's figures were measured on a CPU with AVX-512 VNNI, and ONNX Runtime's int8
    kernels add up differently without a VNNI instruction (AVX2 multiplies u8 by s8 in
    pairs that saturate): there they are the card's to within the gate's tolerance
    (measured on an AVX2-only AMD EPYC: Dice 0.8275 against 0.8292); the float model's
    figures are exact everywhere."""
    from training.quantize import figures, split_samples

    card = load_model(INT8, "cpu").card.model_extra or {}
    record = card["quantization"]
    split = card["training"]["split"]
    gate = "report" if "report" in split else "val"  # the images that chose nothing
    assert record["validation_images"] == split[gate]
    samples = split_samples(INT8, ISBI, gate)
    now = figures(INT8, samples)
    exact = 1e-6 if _has_vnni() else record["tolerance"]
    for key, value in record["int8"].items():
        assert now[key] == pytest.approx(value, abs=exact), key
    for key in ("mean_dice", "objects_rand_error"):
        assert abs(now[key] - record["float"][key]) <= record["tolerance"], key
    assert record["float"] == pytest.approx(figures(MODEL, samples), abs=1e-6)


def _has_vnni() -> bool:
    """Whether the CPU has an int8 dot-product instruction (AVX-512 VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _bf16_or_skip() -> None:
    from app.inference.openvino import capabilities

    native = capabilities()
    if native is None:
        pytest.skip("OpenVINO is not installed (the `cpu` extra has it)")
    if "BF16" not in native:
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: OpenVINO runs no bf16 here")


def test_bf16_on_openvino_keeps_the_cards_figures() -> None:
    """UNET_PRECISION=auto on a CPU with bf16 (OpenVINO): on the validation slices the masks
    agree with fp32 on >= 99.9 % of pixels, membrane Dice moves by <= 0.003 and the objects'
    Rand error by <= 0.005."""
    _bf16_or_skip()
    from app.inference import ProviderOptions

    fp32 = load_model(MODEL, "cpu")
    bf16 = load_model(MODEL, "openvino", options=ProviderOptions(precision="bf16"))
    assert bf16.engine.precision == "bf16"
    labels = (fp32.card.model_extra or {})["labels"]
    samples = validation_samples(fp32)
    threshold = fp32.card.threshold
    assert threshold is not None
    predictors = {
        name: Predictor(m.engine.run, m.card) for name, m in (("fp32", fp32), ("bf16", bf16))
    }
    for sample in samples:
        masks = {
            n: p.mask(p.probabilities(sample.image)[0], threshold) for n, p in predictors.items()
        }
        assert float((masks["fp32"] == masks["bf16"]).mean()) >= 0.999
    figures = {
        name: evaluate_masks(
            predictor_masks(p, threshold=threshold), samples, fp32.card.classes, labels["objects"]
        )
        for name, p in predictors.items()
    }
    dice = {n: f["dice"]["membrane"] for n, f in figures.items()}
    assert abs(dice["bf16"] - dice["fp32"]) <= 0.003, dice
    rand = {
        n: objects_rand_error(p, samples, threshold, labels["objects"])
        for n, p in predictors.items()
    }
    assert abs(rand["bf16"] - rand["fp32"]) <= 0.005, rand


def test_the_compiled_flood_equals_scikit_images_on_the_validation_slices() -> None:
    """app/inference/flood.py against scikit-image's watershed on real probabilities: the
    same label on every pixel of the validation slices (ties between seeds included)."""
    from scipy import ndimage

    from app.inference.flood import flood
    from app.inference.objects import FOUR, watershed_inputs
    from tests.inference.test_flood import skimage_flood

    model = load_model(MODEL)
    predictor = Predictor(model.engine.run, model.card)
    for sample in validation_samples(model):
        levels, seed = watershed_inputs(
            predictor.probabilities(sample.image)[0], model.card.objects
        )
        seeds, count = ndimage.label(seed, structure=FOUR)
        assert count >= 50  # real cells
        np.testing.assert_array_equal(flood(levels, seeds), skimage_flood(levels, seeds))
