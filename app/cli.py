"""``unet-segment``: segment files, folders and globs from the command line (API.md, "Large
images: the command line").

    unet-segment [--model PATH] [--format F] [--out DIR] [--tile N] [--batch N]
                 [--threshold T] [--tta] [--min-area A] [--overwrite] INPUT...

Each input goes through exactly what ``POST /segment`` runs (the same decoders,
predictor and output encoders), so a file equals the service's answer byte for
byte. ``DIR/<stem>.<ext>`` (ext by format: ``png``, ``rle.json``, ``prob.png``,
``instances.png``, ``objects.json``, ``geojson``, ``overlay.png``, ``seg.dcm``)
appears atomically (a temporary file renamed); an input whose output exists is
skipped (resume; ``--overwrite`` redoes it); an input that fails is reported and
the others go on; ``DIR/summary.json`` lists every input with its status, time,
size and error. Progress bars for the files and for the tiles of each (tqdm, on
stderr). Exit 0 when every input succeeded, 1 when any failed, 130 on Ctrl-C
(no half-written file is left); 2 for bad arguments or a model or tiling that cannot
run.

Not yet: images beyond memory (tiled/pyramidal TIFF, OME-Zarr, streamed to an
OME-Zarr or OME-TIFF) and ``--dask``; images above ``--max-pixels`` are refused.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.codecs.errors import CodecError
from app.codecs.images import Decoders, Limits
from app.codecs.outputs import Model, Options, Outputs, default_outputs
from app.inference import InferenceError, Predictor, load_model
from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE
from app.service import input_formats, segment_frames
from app.settings import DEFAULT_MODEL

# Files a folder contributes (by name; their content is recognised by magic number).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"}
MAX_PIXELS = 64 << 20  # the service's default UNET_MAX_IMAGE_PIXELS (8192 x 8192)


def expand(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> the input files, each once."""
    found: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            found += sorted(Path(p) for p in glob.glob(given, recursive=True) if Path(p).is_file())
    unique = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


class Segmenter:
    """The service's pipeline in this process: decode -> predict every frame -> encode."""

    def __init__(self, args: argparse.Namespace, outputs: Outputs) -> None:
        loaded = load_model(args.model, args.providers)
        self.model = Model(loaded.card, loaded.engine.sha256)
        self.predictor = Predictor(
            loaded.engine.run, loaded.card, tile_size=args.tile, batch_size=args.batch
        )
        self.decoders: Decoders = input_formats(loaded.card)
        self.outputs, self.output = outputs, args.format
        threshold = args.threshold or loaded.card.threshold or 0.5
        self.options = Options(threshold, 1, args.tta, args.min_area)
        self.limits = Limits(args.max_pixels)

    def __call__(self, data: bytes, tiles: tqdm) -> tuple[bytes, str, dict[str, Any]]:
        image = self.decoders.decode(data, self.limits)
        encoder = self.outputs.encoder(self.output, image, self.model, self.options)

        def progress(done: int, total: int) -> None:
            tiles.total = total
            tiles.n = done
            tiles.refresh()

        segment_frames(image, encoder, self.predictor, self.options, progress)
        size = {"width": image.width, "height": image.height, "frames": len(image.frames)}
        return encoder.finish(), encoder.media_type, size


def target(folder: Path, source: Path, extension: str, media_type: str | None = None) -> Path:
    """``folder/<stem>.<ext>``; an instance image past 65535 objects is a TIFF."""
    if media_type == "image/tiff" and extension.endswith(".png"):
        extension = extension[: -len(".png")] + ".tif"
    return folder / f"{source.stem}.{extension}"


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary file beside ``path``, renamed over it: never a half-written ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    files = expand(args.inputs)
    if not files:
        print("unet-segment: no input files found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    extension = next(o for o in outputs if o.name == args.format).extension or args.format
    segment = Segmenter(args, outputs)
    summary: list[dict[str, Any]] = []
    try:
        for source in tqdm(files, desc="files", unit="file", file=sys.stderr):
            summary.append(one(source, args, extension, segment))
    finally:
        write_atomically(args.out / "summary.json", json.dumps(summary, indent=1).encode())
    return 1 if any(row["status"] == "failed" for row in summary) else 0


def one(
    source: Path, args: argparse.Namespace, extension: str, segment: Segmenter
) -> dict[str, Any]:
    """Segment one input; its row of the summary."""
    existing = [
        target(args.out, source, extension),
        target(args.out, source, extension, "image/tiff"),
    ]
    done = next((p for p in existing if p.exists()), None)
    if done is not None and not args.overwrite:
        return {"input": str(source), "output": str(done), "status": "skipped"}
    began = time.perf_counter()
    row: dict[str, Any] = {"input": str(source)}
    try:
        with tqdm(desc="tiles", unit="tile", leave=False, file=sys.stderr) as tiles:
            body, media_type, size = segment(source.read_bytes(), tiles)
        path = target(args.out, source, extension, media_type)
        write_atomically(path, body)
        row |= {"output": str(path), "status": "ok", **size, "bytes": len(body)}
    except (CodecError, InferenceError, ValueError, OSError) as exc:
        row |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        tqdm.write(f"unet-segment: {source}: {exc}", file=sys.stderr)
    row["seconds"] = round(time.perf_counter() - began, 3)
    return row


def count(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" for non-numbers
    return parse


def parse_args(argv: Sequence[str] | None, outputs: Outputs) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="unet-segment", description=__doc__.split("\n\n")[0], epilog="See README.md."
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the ONNX model")
    parser.add_argument("--format", default="png", choices=outputs.names(), help="what to write")
    parser.add_argument("--out", type=Path, default=Path("."), help="the output folder")
    parser.add_argument(
        "--tile", type=count(1), default=CPU_TILE_SIZE, help="largest tile side, px"
    )
    parser.add_argument("--batch", type=count(1), default=CPU_BATCH_SIZE, help="tiles per run")
    parser.add_argument("--threshold", type=float, help="default: the card's, else 0.5")
    parser.add_argument("--tta", action="store_true", help="mean over the four flips")
    parser.add_argument("--min-area", type=count(0), help="object formats: smallest object, px")
    parser.add_argument("--providers", default="auto", help="auto, cpu, cuda or tensorrt")
    parser.add_argument("--max-pixels", type=count(1), default=MAX_PIXELS, help="largest image, px")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs already done")
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    outputs = default_outputs()
    args = parse_args(argv, outputs)
    try:
        return run(args, outputs)
    except KeyboardInterrupt:
        print(
            "unet-segment: interrupted; finished outputs are kept, none is half-written",
            file=sys.stderr,
        )
        return 130
    except (InferenceError, ValueError) as exc:  # the model, or a tiling it cannot take
        print(f"unet-segment: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
