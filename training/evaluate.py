"""Metrics of a model on whole images, through the service's own predictor.

    python -m training evaluate --model run/model.onnx --data DIR [--split val]
    python -m training evaluate --model run/best.pt --data DIR
    python -m training evaluate --baseline otsu --data DIR --foreground-value 0

An ONNX file goes through ``app.inference.load_model`` + ``Predictor`` (exactly
what the service runs); a checkpoint through the same ``Predictor`` with the
torch network as its ``run``. Metrics, pooled over the split's pixels: Dice and
IoU per class, pixel error (1 - accuracy); per image then averaged: the adapted
Rand error (scikit-image) of the object instances (connected components of the
card's ``objects`` region, e.g. ISBI's cells) and of the objects the card's
recipe finds (what ``format=objects`` returns: a watershed for ISBI). Masks use
the card's calibrated threshold when it has one. A table goes to stdout, the
JSON next to the model (``--json`` to choose).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from skimage.filters import threshold_otsu
from skimage.metrics import adapted_rand_error

from app.inference import Predictor, RunFn, load_model
from app.inference.card import parse_card
from training.checkpoint import card_of, load_checkpoint
from training.data import Sample, load_samples
from training.losses import Objects, object_labels
from training.unet import UNet

MaskFn = Callable[[Sample], npt.NDArray[np.integer]]


def rand_error(
    pred: npt.NDArray[np.integer], true: npt.NDArray[np.integer], objects: Objects
) -> float | None:
    """Adapted Rand error of the instances; None when the truth has no object."""
    true_instances = object_labels(true, objects)
    if not true_instances.any():
        return None
    error, _, _ = adapted_rand_error(true_instances, object_labels(pred, objects))
    return float(error)


def segmentation_metrics(
    pairs: Iterable[tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]],
    classes: list[str],
    objects: Objects = "foreground",
) -> dict[str, Any]:
    """Metrics of (predicted, true) H x W class-index masks (see the module docstring)."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)  # [true, predicted]
    rand_errors, images = [], 0
    for pred, true in pairs:
        confusion += np.bincount(
            true.ravel().astype(np.int64) * k + pred.ravel(), minlength=k * k
        ).reshape(k, k)
        if (error := rand_error(pred, true, objects)) is not None:
            rand_errors.append(error)
        images += 1
    tp = np.diag(confusion).astype(np.float64)
    true_n, pred_n = confusion.sum(1), confusion.sum(0)
    # An empty class in both truth and prediction scores 1: nothing to find, nothing found.
    dice = np.where(true_n + pred_n > 0, 2 * tp / np.maximum(true_n + pred_n, 1), 1.0)
    union = true_n + pred_n - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
    return {
        "images": images,
        "dice": dict(zip(classes, dice.tolist(), strict=True)),
        "iou": dict(zip(classes, iou.tolist(), strict=True)),
        "mean_dice": float(dice[1:].mean()),
        "mean_iou": float(iou[1:].mean()),
        "pixel_error": float(1 - tp.sum() / max(confusion.sum(), 1)),
        "rand_error": float(np.mean(rand_errors)) if rand_errors else None,
    }


def evaluate_masks(
    mask_of: MaskFn, samples: list[Sample], classes: list[str], objects: Objects
) -> dict[str, Any]:
    return segmentation_metrics(((mask_of(s), s.label) for s in samples), classes, objects)


def torch_runner(model: UNet, device: torch.device | str = "cpu") -> RunFn:
    """The network as the tiler's ``run``: N x C x h x w float32 -> N x K x h' x w' logits."""

    def run(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            logits = model(torch.from_numpy(batch).to(device)).logits
        out: npt.NDArray[np.float32] = logits.float().cpu().numpy()
        return out

    return run


def predictor_masks(predictor: Predictor, tta: bool = False, threshold: float = 0.5) -> MaskFn:
    return lambda sample: predictor.predict(sample.image, tta=tta, threshold=threshold).mask


def objects_rand_error(
    predictor: Predictor, samples: list[Sample], threshold: float, objects: Objects
) -> float:
    """Mean adapted Rand error of the objects the card's recipe finds (what format=objects
    returns), against the true instances of the ``objects`` region."""
    from training.calibrate import object_rand_error

    rule = predictor.card.objects
    classes = len(predictor.card.classes)
    errors = []
    for sample in samples:
        prediction = predictor.predict(sample.image, threshold=threshold)
        p, mask = prediction.probabilities, prediction.mask
        errors.append(object_rand_error(p, mask, sample.label, rule, classes, objects))
    return float(np.mean(errors))


def open_model(
    path: Path, *, tile_size: int, batch_size: int, device: str = "cpu"
) -> tuple[Predictor, dict[str, Any]]:
    """A Predictor for an ONNX file (via load_model) or a checkpoint, and the model card."""
    if path.suffix == ".onnx":
        loaded = load_model(path, "cpu" if device == "cpu" else "auto")
        card = loaded.card
        run: RunFn = loaded.engine.run
        document = card.model_dump()
    else:
        checkpoint = load_checkpoint(path)
        document = card_of(checkpoint)
        card = parse_card(document, str(path))
        run = torch_runner(checkpoint.model.to(device), device)
    return Predictor(run, card, tile_size=tile_size, batch_size=batch_size), document


def otsu_masks(polarity: str) -> MaskFn:
    """Binary baseline: foreground = pixels darker (or brighter) than Otsu's threshold."""

    def mask_of(sample: Sample) -> npt.NDArray[np.uint8]:
        gray = sample.image.mean(axis=2)
        dark = gray <= threshold_otsu(gray)
        return (dark if polarity == "dark" else ~dark).astype(np.uint8)

    return mask_of


def otsu_polarity(samples: list[Sample]) -> str:
    """'dark' when the foreground is darker than the background on these images."""
    fg = np.concatenate([s.image.mean(axis=2)[s.label == 1] for s in samples])
    bg = np.concatenate([s.image.mean(axis=2)[s.label == 0] for s in samples])
    return "dark" if fg.size and bg.size and fg.mean() < bg.mean() else "bright"


def format_table(title: str, metrics: dict[str, Any]) -> str:
    """A fixed-width table: one row per class (Dice, IoU), then the whole-split figures."""
    lines = [title, f"{'class':<20} {'dice':>8} {'iou':>8}"]
    for name, dice in metrics["dice"].items():
        lines.append(f"{name:<20} {dice:>8.4f} {metrics['iou'][name]:>8.4f}")
    lines.append(f"{'mean (non-bg)':<20} {metrics['mean_dice']:>8.4f} {metrics['mean_iou']:>8.4f}")
    rand = metrics["rand_error"]
    lines.append(
        f"pixel error {metrics['pixel_error']:.4f}   adapted Rand error "
        + ("n/a" if rand is None else f"{rand:.4f}")
        + f"   ({metrics['images']} images)"
    )
    if "objects_rand_error" in metrics:
        lines.append(
            f"adapted Rand error of the objects (the card's recipe): "
            f"{metrics['objects_rand_error']:.4f}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="an exported .onnx file or a .pt checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="folder with image/ and label/")
    parser.add_argument(
        "--split",
        choices=["val", "train", "select", "report", "all"],
        default="val",
        help="images of the model's training split (select / report: the validation images "
        "that chose its epoch and calibration / that did not), or all (default: val)",
    )
    parser.add_argument("--baseline", choices=["otsu"], help="also evaluate an Otsu threshold")
    parser.add_argument("--label-mode", choices=["binary", "multiclass"])
    parser.add_argument("--foreground-value", type=int)
    parser.add_argument("--objects", choices=["foreground", "background"])
    parser.add_argument("--tile-size", type=int, default=572)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (checkpoints, ORT provider)")
    parser.add_argument(
        "--tta", action="store_true", help="average over the four flips, as /segment?tta=true"
    )
    parser.add_argument("--json", type=Path, help="where to write the metrics JSON")
    parser.add_argument(
        "--threshold", type=float, help="foreground threshold (default: the card's, else 0.5)"
    )


def _names(card: dict[str, Any] | None, split: str, data: Path) -> list[str] | None:
    if split == "all":
        return None
    recorded = ((card or {}).get("training") or {}).get("split")
    if not recorded:
        raise ValueError(
            f"--split {split}: the model records no training split; use --split all for {data}"
        )
    if split not in recorded:
        raise ValueError(f"--split {split}: the model records no {split} images (train with "
                         "--select-images N to have select and report)")  # fmt: skip
    names: list[str] = list(recorded[split])
    return names


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate; prints the table(s), writes the JSON, returns {"model": ..., "otsu": ...}."""
    if args.model is None and args.baseline is None:
        raise ValueError("give --model FILE, or --baseline otsu, or both")
    predictor, card = None, None
    if args.model is not None:
        predictor, card = open_model(
            args.model, tile_size=args.tile_size, batch_size=args.batch_size, device=args.device
        )
    labels = (card or {}).get("labels") or {}
    classes = list(card["classes"]) if card else ["background", "foreground"]
    objects: Objects = args.objects or labels.get("objects", "foreground")
    options: dict[str, Any] = {
        "label_mode": args.label_mode or labels.get("mode", "binary"),
        "foreground_value": (
            args.foreground_value
            if args.foreground_value is not None
            else labels.get("foreground_value", 255)
        ),
        "num_classes": len(classes),
    }
    names = _names(card, args.split, args.data)
    samples = load_samples(args.data, names=names, **options)
    results: dict[str, Any] = {"split": args.split, "images": [s.name for s in samples]}
    if predictor is not None:
        results["tta"] = bool(getattr(args, "tta", False))
        threshold = args.threshold or (card or {}).get("threshold") or 0.5
        results["threshold"] = threshold
        results["model"] = evaluate_masks(
            predictor_masks(predictor, results["tta"], threshold), samples, classes, objects
        )
        results["model"]["objects_rand_error"] = objects_rand_error(
            predictor, samples, threshold, objects
        )
        print(
            format_table(
                f"{card['name'] if card else ''} {card['version'] if card else ''} "
                f"on {args.split} ({args.model})",
                results["model"],
            )
        )
    if args.baseline == "otsu":
        if len(classes) != 2:
            raise ValueError("the Otsu baseline is binary; this model has more classes")
        train_names = _names(card, "train", args.data) if card and names is not None else None
        reference = (
            load_samples(args.data, names=train_names, **options) if train_names else samples
        )
        polarity = otsu_polarity(reference)
        results["otsu"] = {
            "polarity": polarity,
            **evaluate_masks(otsu_masks(polarity), samples, classes, objects),
        }
        print(format_table(f"Otsu threshold baseline ({polarity} = foreground)", results["otsu"]))
    target = args.json or (
        args.model.with_suffix(f".{args.split}.json")
        if args.model
        else Path(f"otsu.{args.split}.json")
    )
    target.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"metrics written to {target}")
    return results
