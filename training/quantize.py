"""Static INT8 quantisation of an exported model, written only if it is as good as the float one.

    python -m training quantize --model model/unet.onnx --data ../shared/data/isbi2012/train \\
        --out model/unet-int8.onnx

1. Calibration tiles: the tiles the service's Predictor cuts from the card's training
   slices (never its validation slices), normalised as it normalises them.
2. ONNX Runtime's static quantiser: QDQ, per-channel symmetric int8 weights, uint8
   activations (MinMax ranges over the calibration tiles), after its shape pre-processing;
   the 1 x 1 head that makes the logits stays float (``head``).
3. The gate: on the validation split (its report images, for a model trained with
   ``--select-images``), float against int8 at the card's threshold --
   mean Dice of the foreground classes and the adapted Rand error of the objects the
   card's recipe finds. The int8 model is written only when both differ by at most
   ``--tolerance`` (0.005); otherwise nothing is written and the exit status is 1.
4. Its card is the float model's, with its own threshold and objects recipe
   (``training calibrate`` on the same split as the float model's: 8-bit activations
   move the probabilities a little, and the objects' Rand error of ISBI has a cliff
   right next to the float model's seed threshold), plus a ``quantization`` record
   (method, calibration slices, the figures of both models).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from app.inference import Predictor, load_model
from app.inference.card import METADATA_KEY
from training import calibrate
from training.data import Sample, load_samples
from training.evaluate import objects_rand_error, predictor_masks, segmentation_metrics

RANGE_EVERY = 4  # tiles whose activations are held at once while ranges are found
CALIBRATION_TILE = 380  # px: the quantiser holds every activation of the tiles it ranges


class Tiles(CalibrationDataReader):  # type: ignore[misc]  # untyped base
    """The calibration tiles, one batch at a time, as the quantiser reads them."""

    def __init__(self, batches: list[npt.NDArray[np.float32]], input_name: str) -> None:
        self.batches = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self.batches, None)


def calibration_tiles(model: Path, samples: list[Sample]) -> list[npt.NDArray[np.float32]]:
    """The normalised N x C x h x w tiles the Predictor feeds the network for ``samples``."""
    loaded = load_model(model, "cpu")
    batches: list[npt.NDArray[np.float32]] = []

    def record(batch: npt.NDArray[np.float32]) -> Any:
        batches.append(batch.copy())
        return loaded.engine.run(batch)

    predictor = Predictor(record, loaded.card, tile_size=CALIBRATION_TILE)
    for sample in samples:
        predictor.probabilities(sample.image)
    return batches


def head(graph: onnx.GraphProto) -> list[str]:
    """The nodes from the network's output back to its last convolution (the 1 x 1 head).

    They stay float: the logits' fine levels are what the watershed's seeds (p < 0.1 or
    so) are cut from; an 8-bit logit moved the objects' Rand error on ISBI from 0.026
    to 0.044 while Dice stayed within 3e-4."""
    producers = {output: node for node in graph.node for output in node.output}
    names, node = [], producers.get(graph.output[0].name)
    while node is not None:
        names.append(node.name)
        if node.op_type == "Conv":
            break
        node = producers.get(node.input[0])
    return names


def quantize(model: Path, out: Path, batches: list[npt.NDArray[np.float32]]) -> None:
    """``model`` -> ``out``: QDQ int8 but the head, without a card (``write_card`` adds it)."""
    graph = onnx.load(str(model), load_external_data=False).graph
    input_name = graph.input[0].name
    if len(batches) % RANGE_EVERY == 0:  # ORT finds "no data" when the last group is empty;
        batches = [*batches, batches[-1]]  # a tile seen twice changes no min or max
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # The crops of the skip connections defeat symbolic shape inference: ONNX's own only.
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Tiles(batches, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=head(graph),
            # Ranges merged every few tiles: every activation of every tile at once is GBs.
            extra_options={"CalibMaxIntermediateOutputs": RANGE_EVERY},
        )


def figures(model: Path, samples: list[Sample]) -> dict[str, float]:
    """Mean Dice, pixel error and the objects' adapted Rand error on ``samples``, at the
    card's threshold (0.5 without one), as the service segments them."""
    loaded = load_model(model, "cpu")
    card, threshold = loaded.card, loaded.card.threshold or 0.5
    predictor = Predictor(loaded.engine.run, card)
    objects = (card.model_dump().get("labels") or {}).get("objects", "foreground")
    masks = predictor_masks(predictor, threshold=threshold)
    metrics = segmentation_metrics(((masks(s), s.label) for s in samples), card.classes, objects)
    rand = objects_rand_error(predictor, samples, threshold, objects)
    return {
        "mean_dice": metrics["mean_dice"],
        "pixel_error": metrics["pixel_error"],
        "objects_rand_error": rand,
    }


def write_card(source: Path, target: Path, record: dict[str, Any] | None = None) -> None:
    """Copy ``source``'s card into ``target``; with ``record``, add ``quantization: record``
    and mark the version (``1.0.0+int8``: /model, the ready log line and unet_model_info
    tell the variants apart)."""
    props = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    card = json.loads(props[METADATA_KEY])
    if record is not None:
        card |= {"quantization": record, "version": f"{card['version']}+int8"}
    proto = onnx.load(str(target))
    onnx.helper.set_model_props(proto, {**props, METADATA_KEY: json.dumps(card)})
    onnx.save(proto, str(target))


def split_of(model: Path) -> dict[str, list[str]]:
    """The split the model's card records (train, val, and select / report if it has them)."""
    document = load_model(model, "cpu").card.model_dump()
    return dict((document.get("training") or {}).get("split") or {})


def split_samples(model: Path, data: Path, split: str) -> list[Sample]:
    """The samples of the card's ``split`` (train, val, select, report), or all (``all``)."""
    document = load_model(model, "cpu").card.model_dump()
    labels = document.get("labels") or {}
    names = None
    if split != "all":
        names = split_of(model).get(split)
        if not names:
            raise ValueError(f"the model records no {split} split; use --split all")
    return load_samples(
        data,
        names=names,
        label_mode=labels.get("mode", "binary"),
        foreground_value=labels.get("foreground_value", 255),
        num_classes=len(document["classes"]),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="an exported float .onnx")
    parser.add_argument("--data", type=Path, required=True, help="folder with image/ and label/")
    parser.add_argument("--out", type=Path, required=True, help="the int8 .onnx to write")
    parser.add_argument(
        "--split",
        choices=["card", "all"],
        default="card",
        help="card: calibrate on its training split, gate on its validation split; "
        "all: every image for both (models without a recorded split)",
    )
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest difference")


def main(args: argparse.Namespace) -> int:
    recorded = split_of(args.model)
    honest = "select" in recorded  # trained with --select-images: choose on some, gate on the rest
    calibrate_on = "all" if args.split == "all" else "train"
    choose_on = "all" if args.split == "all" else ("select" if honest else "val")
    gate_on = "all" if args.split == "all" else ("report" if honest else "val")
    calibration = split_samples(args.model, args.data, calibrate_on)
    calibrated = load_model(args.model, "cpu").card.model_dump().get("calibration") or {}
    validation = split_samples(args.model, args.data, gate_on)
    with tempfile.TemporaryDirectory() as scratch:
        candidate = Path(scratch) / "int8.onnx"
        quantize(args.model, candidate, calibration_tiles(args.model, calibration))
        write_card(args.model, candidate)
        # Its own threshold and watershed seed, chosen as the float model's were (same split,
        # same seed tolerance; a card calibrated before the tolerance took the least error):
        # an objects' Rand error can have a cliff next to the float model's seed threshold.
        tolerance = float(calibrated.get("seed_tolerance", 0.0))
        with contextlib.redirect_stdout(io.StringIO()):
            calibrate.main(argparse.Namespace(model=candidate, data=args.data, split=choose_on,
                                              seed_tolerance=tolerance, out=candidate))  # fmt: skip
        before, after = figures(args.model, validation), figures(candidate, validation)
        differences = {k: abs(after[k] - before[k]) for k in ("mean_dice", "objects_rand_error")}
        passed = all(d <= args.tolerance for d in differences.values())
        record = {
            "method": "onnxruntime quantize_static: QDQ, per-channel int8 weights, "
            "uint8 activations, MinMax; the head convolution float",
            "calibration_images": [s.name for s in calibration],
            "validation_images": [s.name for s in validation],
            "float": before,
            "int8": after,
            "tolerance": args.tolerance,
        }
        print(json.dumps({**record, "passed": passed}, indent=1))
        if not passed:
            print(f"not written: {differences} above the tolerance {args.tolerance}")
            return 1
        write_card(candidate, candidate, record)
        args.out.write_bytes(candidate.read_bytes())
    return 0
