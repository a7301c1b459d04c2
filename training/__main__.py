"""``python -m training {train,evaluate,export,calibrate,quantize}``.

    python -m training train --data ../shared/data/isbi2012/train --out runs/isbi \\
        --classes background,membrane --foreground-value 0 --objects background
    python -m training train --out runs/isbi --resume --epochs 80
    python -m training export --checkpoint runs/isbi/best.pt --out runs/isbi/model.onnx
    python -m training evaluate --model runs/isbi/model.onnx --data ../shared/data/isbi2012/train
    python -m training calibrate --model runs/isbi/model.onnx --data ../shared/data/isbi2012/train
    python -m training quantize --model runs/isbi/model.onnx --data ../shared/data/isbi2012/train \
        --out runs/isbi/model-int8.onnx
    python -m training offset --data ../shared/data/isbi2012/train --foreground-value 0

The train options are generated from training.config (one flag per field, e.g.
``--base-channels 32``, ``--batch-norm/--no-batch-norm``); ``--help`` lists them
with their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import Any

from training import calibrate, evaluate, export, offset, quantize
from training.config import TrainConfig, UNetConfig, comma_list


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser: argparse.ArgumentParser, cls: type[Any], title: str) -> None:
    """One option per dataclass field; defaults stay in the dataclass (SUPPRESS), so
    the namespace holds only what was given -- exactly the overrides for --resume."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name == "model":
            continue
        kind = hints[field.name]
        default = getattr(cls(), field.name)
        text = f"{field.metadata.get('help', '')} (default: {default})"
        common: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(_flag(field.name), choices=typing.get_args(kind), **common)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(
                _flag(field.name), type=comma_list(typing.get_args(kind)[0]), **common
            )
        elif kind in (int, float, str):
            group.add_argument(_flag(field.name), type=kind, **common)
        else:  # pragma: no cover - a new field type must be taught to the CLI
            raise TypeError(f"no CLI mapping for {cls.__name__}.{field.name}: {kind}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a U-Net on image/label folders")
    _add_fields(train, TrainConfig, "training")
    _add_fields(train, UNetConfig, "network")
    train.add_argument(
        "--resume", action="store_true", help="continue RUN_DIR/last.pt (given options override)"
    )
    evaluate.add_arguments(commands.add_parser("evaluate", help="metrics on whole images"))
    export.add_arguments(commands.add_parser("export", help="checkpoint -> ONNX with model card"))
    calibrate.add_arguments(
        commands.add_parser("calibrate", help="threshold and objects recipe into the card")
    )
    quantize.add_arguments(
        commands.add_parser("quantize", help="static INT8, written only if as good as float")
    )
    offset.add_arguments(
        commands.add_parser("offset", help="how far the labels sit from what they trace")
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the given options, on top of the defaults or the resumed run's config."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    model_fields = {f.name for f in dataclasses.fields(UNetConfig)}
    model_given = {k: given.pop(k) for k in list(given) if k in model_fields}
    if getattr(args, "resume", False):
        from training.checkpoint import read_record  # torch import only when needed

        if "out" not in given:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        base = TrainConfig.from_dict(read_record(f"{given['out']}/last.pt")["config"])
    else:
        base = TrainConfig()
    if "classes" in given and "num_classes" not in model_given:
        model_given["num_classes"] = len(given["classes"])
    model = dataclasses.replace(base.model, **model_given)
    if "classes" not in given and model.num_classes != len(base.classes):
        given["classes"] = ("background", *(f"class_{i}" for i in range(1, model.num_classes)))
    return dataclasses.replace(base, model=model, **given)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from training.train import train

            summary = train(config_from_args(args), resume=args.resume)
            best = summary["best"]
            if best["metrics"] is not None:
                dice = best["metrics"]["mean_dice"]
                print(f"best epoch {best['epoch']}: validation Dice {dice:.4f}")
                print(f"checkpoint: {summary['run_dir']}/best.pt")
        elif args.command == "evaluate":
            evaluate.main(args)
        elif args.command == "calibrate":
            calibrate.main(args)
        elif args.command == "quantize":
            return quantize.main(args)
        elif args.command == "offset":
            offset.main(args)
        else:
            export.main(args)
    except (ValueError, FileNotFoundError, export.ExportParityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
