"""``python -m app.models check MODEL.onnx [--sidecar]``: will the service serve this model,
and how? The first step of serving your own model (docs/own-model.md).

It loads the model on the CPU as the service would, and says where its card comes from
(a sidecar JSON, the model's own metadata, or inferred by probing the network), the
card's fields, the optional fields it lacks, and, for an inferred card, the WARNING the
service would log and the sidecar that would silence it. ``--sidecar`` writes that card
to ``MODEL.json`` beside the model (never over an existing one), to be corrected by hand.
Exit status 0: the service would serve it; 1: it would not (the reason is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.inference import InferenceError, load_model
from app.inference.card import ModelCard, sidecar_path
from app.models.load import ModelLoadError, checked_input_formats

OPTIONAL = {
    "threshold": "the calibrated threshold of a binary model (else 0.5)",
    "objects": "how pixels become objects (else connected components)",
    "pixel_size_um": "the pixel size trained at, um (slides are then resampled to it)",
    "modalities": "the DICOM modalities it is meant for (the DICOM gateway routes by it)",
}
SOURCES = {
    "sidecar": "the sidecar {sidecar}",
    "embedded": "the model's own metadata (key 'unet')",
    "inferred": "INFERRED by probing the network: every field below is an assumption",
}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def report(path: Path, write_sidecar: bool) -> tuple[int, str]:
    """(exit status, the text to print) for the model at ``path``."""
    warnings = _Warnings()
    logger = logging.getLogger("app.inference.card")
    logger.addHandler(warnings)
    try:
        model = load_model(path, "cpu", threads=1)
    except InferenceError as exc:
        return 1, f"{path.name}: the service would NOT serve it: {exc}"
    finally:
        logger.removeHandler(warnings)
    try:
        checked_input_formats(model.card)  # the card's DICOM window, as start-up checks it
    except ModelLoadError as exc:
        return 1, f"{path.name}: the service would NOT serve it: {exc}"
    card, sidecar = model.card, sidecar_path(path)
    lines = [
        f"{path.name}: the service would serve it as model {path.stem!r}",
        "card from " + SOURCES[model.card_source].format(sidecar=sidecar.name),
        *(f"  {k}: {json.dumps(v)}" for k, v in card.summary().items() if v is not None),
    ]
    given = card.model_fields_set | set(card.model_extra or {})
    missing = [f"  {name}: {why}" for name, why in OPTIONAL.items() if name not in given]
    if missing:
        lines += ["optional fields not given:", *missing]
    lines += [f"WARNING the service would log: {line}" for line in warnings.lines]
    if write_sidecar:
        lines.append(_write(sidecar, card))
    elif model.card_source == "inferred":
        lines.append(f"write these fields to {sidecar.name} (--sidecar does) and correct them")
    return 0, "\n".join(lines)


def _write(sidecar: Path, card: ModelCard) -> str:
    if sidecar.exists():
        return f"{sidecar.name} exists: left as it is"
    document = card.model_dump(exclude_none=True)  # with its own fields (modalities, window)
    sidecar.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return f"wrote {sidecar}: check every field, the service reads it at the next load"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="whether and how the service would serve a model")
    check.add_argument("model", type=Path, help="the .onnx file")
    check.add_argument(
        "--sidecar", action="store_true", help="write the card to MODEL.json beside the model"
    )
    args = parser.parse_args(argv)
    status, text = report(args.model, args.sidecar)
    print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status
