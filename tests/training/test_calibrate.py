"""Calibration: the threshold and the objects recipe chosen on validation data, into the card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from PIL import Image

from app.inference import Predictor, load_model
from app.inference.card import METADATA_KEY, parse_card
from bench.nets import UNetSpec, default_card, save_model
from training import __main__ as cli
from training.calibrate import calibrate
from training.data import Sample


class Oracle:
    """A 'network' whose foreground probability is a known function of the image, v^2 for
    v = pixel / 255: with cells at v = 0.75 (p = 0.56) and membranes at 0.95 (p = 0.90)
    a threshold of 0.5 calls the cells membrane; the best lies between 0.56 and 0.90."""

    card = parse_card(default_card(UNetSpec(depth=2, base=2), name="oracle"), "oracle")

    @staticmethod
    def run(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        v = np.clip(batch[:, :1, 20:-20, 20:-20], 1e-4, 1 - 1e-4) ** 2  # halo 20 cut
        return np.log(v / (1 - v)).astype(np.float32)


def cells_sample(seed: int) -> Sample:
    """Bright membranes (v = 0.95) between cells (v = 0.75), a grid of 4 x 4 cells."""
    rng = np.random.default_rng(seed)
    v = np.full((80, 80), 0.75)
    v[::20, :] = v[:, ::20] = 0.95
    v += rng.normal(0, 0.005, v.shape)
    label = (v > 0.85).astype(np.int64)
    image = np.clip(v * 255, 0, 255).astype(np.uint8)[:, :, None]
    return Sample(str(seed), image, label)


def test_the_threshold_and_the_seed_threshold_minimise_their_errors() -> None:
    predictor = Predictor(Oracle.run, Oracle.card, tile_size=124, batch_size=2)
    samples = [cells_sample(s) for s in range(3)]
    threshold, recipe, record = calibrate(predictor, samples, "background")
    assert threshold is not None
    assert 0.56 < threshold < 0.9
    assert record["pixel_error"][f"at_{threshold}"] == 0
    assert record["pixel_error"]["at_0.5"] > 0.5  # the cells, called membrane
    assert recipe.method == "watershed"
    assert record["rand_error"]["watershed"] == min(
        record["rand_error"]["watershed_by_seed_threshold"].values()
    )
    assert record["rand_error"]["watershed"] < 0.05  # a clean grid: its cells are found


def test_calibrate_writes_the_card_and_keeps_the_weights(tmp_path: Path) -> None:
    spec = UNetSpec(depth=2, base=2)
    data = tmp_path / "data"
    for folder in ("image", "label"):
        (data / folder).mkdir(parents=True)
    for seed in range(2):
        sample = cells_sample(seed)
        Image.fromarray(sample.image[:, :, 0]).save(data / "image" / f"{seed}.png")
        Image.fromarray((sample.label * 255).astype(np.uint8)).save(data / "label" / f"{seed}.png")
    card = default_card(spec, name="to-calibrate")
    card |= {
        "training": {"split": {"train": [], "val": ["0", "1"]}},
        "labels": {"objects": "background"},
    }
    model = tmp_path / "m.onnx"
    save_model(model, spec, seed=3, card=card)
    before = load_model(model, "cpu")
    image = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    out = tmp_path / "calibrated.onnx"
    assert (
        cli.main(["calibrate", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    )
    after = load_model(out, "cpu")
    np.testing.assert_array_equal(after.engine.run(image), before.engine.run(image))
    written = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY])
    assert 0 < written["threshold"] < 1
    assert written["objects"]["method"] == "watershed"
    assert written["calibration"]["images"] == ["0", "1"]
    assert after.card.threshold == written["threshold"]


def test_a_model_without_a_validation_split_needs_split_all(tmp_path: Path) -> None:
    spec = UNetSpec(depth=2, base=2)
    model = tmp_path / "m.onnx"
    save_model(model, spec, seed=3, card=default_card(spec))
    with pytest.raises(SystemExit):
        cli.main(["calibrate", "--model", str(model)])  # --data missing: argparse
    assert cli.main(["calibrate", "--model", str(model), "--data", str(tmp_path)]) == 2
