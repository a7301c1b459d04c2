"""The shipped default model reproduces, through the service's tiler, the metrics its card records.

Reads ../shared/data/isbi2012 (skips with the reason when absent). The card
embedded in model/unet.onnx names its validation slices and the metrics the
training run measured on them; a change that breaks the pipeline or the model
(normalisation, tiling, export, thresholds) moves these numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.inference import Predictor, load_model
from training.data import load_samples
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
    samples = load_samples(
        ISBI,
        names=card["training"]["split"]["val"],
        label_mode=labels["mode"],
        foreground_value=labels["foreground_value"],
        num_classes=len(model.card.classes),
    )
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
    gives now, and they are within the recorded tolerance of the float model's."""
    from training.quantize import figures, split_samples

    card = load_model(INT8, "cpu").card.model_extra or {}
    record = card["quantization"]
    split = card["training"]["split"]
    gate = "report" if "report" in split else "val"  # the images that chose nothing
    assert record["validation_images"] == split[gate]
    samples = split_samples(INT8, ISBI, gate)
    now = figures(INT8, samples)
    for key, value in record["int8"].items():
        assert now[key] == pytest.approx(value, abs=1e-6), key
    for key in ("mean_dice", "objects_rand_error"):
        assert abs(now[key] - record["float"][key]) <= record["tolerance"], key
    assert record["float"] == pytest.approx(figures(MODEL, samples), abs=1e-6)
