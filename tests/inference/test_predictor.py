"""Predictor: channels, normalisation, activations, thresholds, TTA, memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.inference import ImageShapeError, Predictor, load_model
from app.inference.plan import plan_tiles
from app.inference.tiler import predict_whole
from tests.inference.conftest import ort_predict


def predictor(path: Path, **kwargs: int) -> Predictor:
    model = load_model(path, "cpu", threads=1)
    return Predictor(model.engine.run, model.card, **{"tile_size": 252, "batch_size": 2, **kwargs})


def gray(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_probabilities_are_the_sigmoid_of_the_reference(valid_model: Path) -> None:
    p = predictor(valid_model)
    image = gray(300, 400)
    probs, tiles = p.probabilities(image)
    logits = predict_whole(
        image.astype(np.float32) / 255, ort_predict(valid_model), p.geometry, channels=1
    )
    assert tiles == len(plan_tiles(300, 400, p.geometry, 252))
    assert np.abs(probs - 1 / (1 + np.exp(-logits))).max() <= 1e-5


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_sigmoid_threshold(valid_model: Path, threshold: float) -> None:
    p = predictor(valid_model)
    result = p.predict(gray(100, 120), threshold=threshold)
    assert result.mask.dtype == np.uint8
    assert np.array_equal(result.mask, (result.probabilities[0] >= threshold).astype(np.uint8))


def test_softmax_two_classes_thresholds_class_one(softmax2_model: Path) -> None:
    p = predictor(softmax2_model)
    result = p.predict(gray(90, 70), threshold=0.3)
    assert result.probabilities.shape == (2, 90, 70)
    assert np.allclose(result.probabilities.sum(axis=0), 1, atol=1e-6)
    assert np.array_equal(result.mask, (result.probabilities[1] >= 0.3).astype(np.uint8))


def test_softmax_three_classes_is_argmax(softmax3_model: Path) -> None:
    p = predictor(softmax3_model, tile_size=200)
    result = p.predict(gray(90, 130), threshold=0.9)  # ignored for K >= 3
    assert np.array_equal(result.mask, result.probabilities.argmax(axis=0))


@pytest.mark.parametrize("threshold", [0.0, 1.0, -1, 2])
def test_threshold_out_of_range(valid_model: Path, threshold: float) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        predictor(valid_model).predict(gray(10, 10), threshold=threshold)


def test_uint16_is_divided_by_257(valid_model: Path) -> None:
    p = predictor(valid_model)
    image8 = gray(120, 90)
    probs8, _ = p.probabilities(image8)
    probs16, _ = p.probabilities(image8.astype(np.uint16) * 257)
    assert np.abs(probs8 - probs16).max() <= 1e-6


def test_rgb_to_one_channel_model_is_bt601_luma(valid_model: Path) -> None:
    p = predictor(valid_model)
    rgb = np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    expected = predict_whole(
        (luma / 255).astype(np.float32), ort_predict(valid_model), p.geometry, channels=1
    )
    probs, _ = p.probabilities(rgb)
    assert np.abs(probs - 1 / (1 + np.exp(-expected))).max() <= 1e-5


def test_alpha_is_dropped(valid_model: Path, valid_rgb_model: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (60, 70, 4), dtype=np.uint8)
    for path in (valid_model, valid_rgb_model):
        p = predictor(path)
        assert np.array_equal(p.probabilities(rgba)[0], p.probabilities(rgba[..., :3])[0])
    p = predictor(valid_model)
    gray_alpha = rgba[..., :2]
    assert np.array_equal(p.probabilities(gray_alpha)[0], p.probabilities(rgba[..., 0])[0])


def test_gray_to_rgb_model_is_replicated(valid_rgb_model: Path) -> None:
    p = predictor(valid_rgb_model)
    image = gray(70, 50)
    replicated = np.repeat(image[:, :, None], 3, axis=2)
    assert np.array_equal(p.probabilities(image)[0], p.probabilities(replicated)[0])


def test_per_channel_normalisation(valid_rgb_model: Path, tmp_path: Path) -> None:
    import json

    import onnx

    from tests.inference.conftest import VALID_RGB
    from tests.nets import default_card

    scale, offset = [0.01, 0.02, 0.03], [-1.0, 0.0, 1.0]
    card = default_card(VALID_RGB, normalization={"scale": scale, "offset": offset})
    model = onnx.load(str(valid_rgb_model))
    onnx.helper.set_model_props(model, {"unet": json.dumps(card)})
    onnx.save(model, str(tmp_path / "norm.onnx"))
    p = predictor(tmp_path / "norm.onnx")
    image = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    normalised = image * np.array(scale, dtype=np.float32) + np.array(offset, dtype=np.float32)
    expected = predict_whole(normalised, ort_predict(valid_rgb_model), p.geometry, channels=3)
    assert np.abs(p.probabilities(image)[0] - 1 / (1 + np.exp(-expected))).max() <= 1e-5


def test_tta_is_the_mean_over_four_flips(valid_model: Path) -> None:
    p = predictor(valid_model)
    image = gray(150, 230, seed=4)
    flips = []
    for fy, fx in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        probs, _ = p.probabilities(np.ascontiguousarray(image[::fy, ::fx]))
        flips.append(probs[:, ::fy, ::fx])
    tta, tiles = p.probabilities(image, tta=True)
    assert tiles == 4 * p.probabilities(image)[1]
    assert np.abs(tta - np.mean(flips, axis=0)).max() <= 1e-6


def test_progress_counts_tta_tiles(valid_model: Path) -> None:
    seen: list[tuple[int, int]] = []
    predictor(valid_model).probabilities(
        gray(300, 300), tta=True, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1][0] == seen[-1][1] == 4 * 25  # 5 x 5 tiles of 252 px per flip


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((10, 10), dtype=np.float32), "uint8 or uint16"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "1-4 channels"),
        (np.zeros((10,), dtype=np.uint8), "1-4 channels"),
        (np.zeros((0, 10), dtype=np.uint8), "empty"),
    ],
)
def test_bad_frames(valid_model: Path, frame: np.ndarray, message: str) -> None:
    with pytest.raises(ImageShapeError, match=message):
        predictor(valid_model).predict(frame)


def test_invalid_settings(valid_model: Path) -> None:
    model = load_model(valid_model, "cpu")
    with pytest.raises(ValueError, match="below the model's minimum input 188"):
        Predictor(model.engine.run, model.card, tile_size=100)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Predictor(model.engine.run, model.card, batch_size=0)


# Measured in a fresh interpreter: tracemalloc traces every thread of the process, so in
# the test run a thread or a pool left by an earlier test (a server, a reader) that
# allocates while this traces would add its bytes to the peak, and the result would
# depend on which tests ran before.
PEAKS = """
import sys, tracemalloc
from pathlib import Path
import numpy as np
from app.inference import Predictor, load_model

model = load_model(Path(sys.argv[1]), "cpu", threads=1)
image = np.random.default_rng(6).integers(0, 256, (1200, 1200), dtype=np.uint8)
for tile in (204, 572):  # 35 x 35 tiles, then 4 x 4
    predictor = Predictor(model.engine.run, model.card, tile_size=tile, batch_size=1)
    tracemalloc.start()
    predictor.predict(image)
    print(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
"""


def test_peak_memory_grows_with_the_image_not_with_the_tiles(valid_model: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PEAKS, str(valid_model)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    many, few = (int(line) for line in run.stdout.split())
    pixels = 1200 * 1200
    # Probability map + mask + one batch; no padded copy, nothing kept per tile.
    assert many <= 4 * pixels + pixels + 2 * 4 * 572 * 572
    # 77x more tiles cost no more than a few KiB (per-tile state would show as 1225 x).
    assert many - few <= 64 * 1024
