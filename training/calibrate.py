"""Calibrate an exported model on validation data and write the result into its card.

    python -m training calibrate --model model/unet.onnx --data ../shared/data/isbi2012/train

On the images of ``--split`` (default: the validation split the card records):

1. the foreground threshold (binary models) that minimises the pixel error,
   searched over 0.05 .. 0.95 -- the service's default ``threshold`` from now on;
2. the objects recipe: for a model whose objects are what its foreground class
   separates (``labels.objects == "background"``, e.g. ISBI's cells between
   membranes) a watershed of p(foreground) from seeds p < seed_threshold, the
   seed threshold searched over 0.05 .. 0.60 to minimise the adapted Rand error
   of the objects (scikit-image; the true boundary pixels ignored); otherwise
   4-connected components of each class;

and writes ``threshold``, ``objects`` and a ``calibration`` record (the grids,
the split's images, the figures before and after) into the ONNX file's card
(``--out``, default: in place). The weights are untouched.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from skimage.metrics import adapted_rand_error

from app.inference import Predictor, load_model
from app.inference.card import METADATA_KEY, Recipe
from app.inference.objects import find_objects
from training.data import Sample, load_samples
from training.losses import Objects, object_labels

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
SEED_THRESHOLDS = np.round(np.arange(0.05, 0.601, 0.05), 2)
SEED_TOLERANCE = 0.005


def seed_with_margin(by_seed: dict[float, float], tolerance: float) -> float:
    """The seed threshold in the middle of the widest run of consecutive grid seeds whose
    error is within ``tolerance`` of the least (ties: the run, then the middle seed, with
    the lower error), so that a small shift of the probabilities -- other slices, 8-bit
    activations -- stays on the plateau instead of falling off its edge."""
    seeds = sorted(by_seed)
    errors = np.array([by_seed[s] for s in seeds])
    runs, start = [], 0
    for good, run in itertools.groupby(errors <= errors.min() + tolerance):
        stop = start + len(list(run))
        if good:
            runs.append((start, stop))
        start = stop
    first, stop = max(runs, key=lambda r: (r[1] - r[0], -errors[r[0] : r[1]].mean()))
    middle = {(first + stop - 1) // 2, (first + stop) // 2}  # one seed, or two for an even run
    return seeds[min(middle, key=lambda i: (errors[i], i))]


def object_rand_error(
    probabilities: npt.NDArray[np.float32],
    mask: npt.NDArray[np.uint8],
    truth: npt.NDArray[np.integer],
    recipe: Recipe | None,
    classes: int,
    objects: Objects,
) -> float:
    """Adapted Rand error of the objects the recipe finds (None: the mask's components
    of the objects region, as training measures it), against the true instances
    (label 0 of the truth -- e.g. membranes -- ignored, as scikit-image does)."""
    if recipe is None:
        found = object_labels(mask, objects)
    else:
        found = find_objects(probabilities, mask, classes, recipe).labels
    error, _, _ = adapted_rand_error(object_labels(truth, objects), found)
    return float(error)


def pixel_error(masks: list[npt.NDArray[np.integer]], samples: list[Sample]) -> float:
    wrong = sum(int((m != s.label).sum()) for m, s in zip(masks, samples, strict=True))
    return wrong / sum(s.label.size for s in samples)


def calibrate(
    predictor: Predictor,
    samples: list[Sample],
    objects: Objects,
    seed_tolerance: float = SEED_TOLERANCE,
) -> tuple[float | None, Recipe, dict[str, Any]]:
    """(threshold, recipe, record) chosen on ``samples``."""
    classes = len(predictor.card.classes)
    probabilities = [predictor.probabilities(s.image)[0] for s in samples]
    binary = classes == 2
    threshold = None
    record: dict[str, Any] = {"images": [s.name for s in samples]}
    if binary:
        errors = [
            pixel_error([predictor.mask(p, float(t)) for p in probabilities], samples)
            for t in THRESHOLDS
        ]
        threshold = float(THRESHOLDS[int(np.argmin(errors))])
        record["pixel_error"] = {"at_0.5": errors[int(np.argmin(np.abs(THRESHOLDS - 0.5)))]}
        record["pixel_error"][f"at_{threshold}"] = min(errors)
    masks = [predictor.mask(p, threshold or 0.5) for p in probabilities]

    def rand(recipe: Recipe | None) -> float:
        return float(
            np.mean(
                [
                    object_rand_error(p, m, s.label, recipe, classes, objects)
                    for p, m, s in zip(probabilities, masks, samples, strict=True)
                ]
            )
        )

    record["rand_error"] = {"mask_components": rand(None)}  # what the mask alone gives
    recipe = Recipe(method="components")
    if binary and objects == "background":
        by_seed = {
            float(t): rand(Recipe(method="watershed", boundary_class=1, seed_threshold=float(t)))
            for t in SEED_THRESHOLDS
        }
        seed = seed_with_margin(by_seed, seed_tolerance)
        record["rand_error"]["watershed_by_seed_threshold"] = by_seed
        record["rand_error"]["watershed"] = by_seed[seed]
        record["seed_tolerance"] = seed_tolerance
        recipe = Recipe(method="watershed", boundary_class=1, seed_threshold=seed)
    return threshold, recipe, record


def write_card(model: Path, out: Path, updates: dict[str, Any]) -> None:
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    card = {**json.loads(props[METADATA_KEY]), **updates}
    onnx.helper.set_model_props(proto, {**props, METADATA_KEY: json.dumps(card)})
    onnx.save(proto, str(out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="an exported .onnx file")
    parser.add_argument("--data", type=Path, required=True, help="folder with image/ and label/")
    parser.add_argument(
        "--split",
        choices=["val", "select", "all"],
        default="val",
        help="val: the validation split; select: its images that chose the epoch (a model "
        "trained with --select-images), so that the others still report honestly",
    )
    parser.add_argument(
        "--seed-tolerance",
        type=float,
        default=SEED_TOLERANCE,
        help="watershed seed: the middle of the widest run of seeds whose Rand error is within "
        "this of the least (0: the least)",
    )
    parser.add_argument("--out", type=Path, help="where to write the model (default: in place)")


def main(args: argparse.Namespace) -> dict[str, Any]:
    if not 0 <= args.seed_tolerance < 1:
        raise ValueError(f"--seed-tolerance must be in [0, 1), got {args.seed_tolerance}")
    loaded = load_model(args.model, "cpu")
    document = loaded.card.model_dump()
    labels = document.get("labels") or {}
    names = None
    if args.split != "all":
        names = ((document.get("training") or {}).get("split") or {}).get(args.split)
        if not names:
            raise ValueError(f"the model records no {args.split} split; use --split all")
    samples = load_samples(
        args.data,
        names=names,
        label_mode=labels.get("mode", "binary"),
        foreground_value=labels.get("foreground_value", 255),
        num_classes=len(loaded.card.classes),
    )
    predictor = Predictor(loaded.engine.run, loaded.card)
    objects_of = labels.get("objects", "foreground")
    threshold, recipe, record = calibrate(predictor, samples, objects_of, args.seed_tolerance)
    objects = {
        "method": recipe.method,
        "boundary_class": recipe.boundary_class,
        "seed_threshold": recipe.seed_threshold,
        "min_area": recipe.min_area,
    }
    updates: dict[str, Any] = {"objects": objects, "calibration": {"split": args.split, **record}}
    if threshold is not None:
        updates["threshold"] = threshold
    write_card(args.model, args.out or args.model, updates)
    print(json.dumps(updates, indent=1))
    return updates
