"""INT8: the quantised model is QDQ with the float model's card plus a quantization record,
predicts what the float one predicts (within int8's error), and is written only when the
gate passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from app.inference import Predictor, load_model
from app.inference.card import METADATA_KEY
from tests.nets import UNetSpec, default_card, save_model
from training import __main__ as cli
from training.data import load_samples

SPEC = UNetSpec(depth=2, base=4)


def command(folder: Path, data: Path) -> tuple[Path, Path, list[str]]:
    """(float model, int8 output, the quantize command) for a tiny model in ``folder``."""
    model, out = folder / "float.onnx", folder / "int8.onnx"
    save_model(model, SPEC, seed=2, card=default_card(SPEC, name="shapes"))
    return model, out, ["quantize", "--model", str(model), "--data", str(data), "--out", str(out)]


def test_a_quantised_model_keeps_its_card_and_predicts_like_the_float_one(
    tmp_path: Path, shapes: Callable[..., Path]
) -> None:
    data = shapes(tmp_path / "data", 4, seed=3)
    model, out, argv = command(tmp_path, data)
    assert cli.main([*argv, "--split", "all", "--tolerance", "1"]) == 0
    proto = onnx.load(str(out))
    kinds = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    card = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert card["name"] == "shapes"
    assert card["version"].endswith("+int8")
    record = card["quantization"]
    assert record["calibration_images"] == ["0", "1", "2", "3"]
    assert set(record["float"]) == set(record["int8"]) == {
        "mean_dice", "pixel_error", "objects_rand_error"
    }  # fmt: skip
    image = load_samples(data)[0].image
    probabilities = []
    for path in (model, out):
        loaded = load_model(path, "cpu")
        probabilities.append(Predictor(loaded.engine.run, loaded.card).probabilities(image)[0])
    assert np.abs(probabilities[0] - probabilities[1]).max() < 0.05
    assert not np.array_equal(probabilities[0], probabilities[1])  # it did quantise


def test_a_model_that_fails_the_gate_is_not_written(
    tmp_path: Path, shapes: Callable[..., Path]
) -> None:
    _, out, argv = command(tmp_path, shapes(tmp_path / "data", 2, seed=4))
    assert cli.main([*argv, "--split", "all", "--tolerance", "-1"]) == 1  # nothing passes
    assert not out.exists()
    assert cli.main([*argv]) == 2  # no recorded split: says to use --split all
