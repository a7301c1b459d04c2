"""``unet-segment``: segment files, folders and globs from the command line (API.md, "Large
images: the command line"; the manual: docs/large-images.md).

An image the service accepts goes through what ``POST /segment`` runs: the file equals
its answer byte for byte. Larger ones (slides, OME-TIFF, OME-Zarr, DICOM WSI) are read
and written block by block (app/pipeline/large.py, objects.py): flat memory, bit for bit
the in-memory result. Default format: ``png`` up to ``--max-pixels``, ``ome-zarr`` above.

``DIR/<stem>.<ext>`` appears atomically; an input whose output exists is skipped
(``--overwrite`` redoes it); an input that fails (or names nothing, or shares its output
with another) is reported and the others go on; ``DIR/summary.json`` lists every input.
Progress bars (tqdm, stderr). Exit 0 when every input succeeded, 1 when any failed, 130
on Ctrl-C or SIGTERM (nothing half-written is left), 2 for bad arguments, a model or
tiling that cannot run, or an unreachable Dask scheduler. ``--dask ADDRESS``: blocks and
small images on a Dask cluster (app/pipeline/dask.py); ``--model-repository DIR
--model-name NAME`` serves DIR/NAME.onnx as the service's repository names it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zarr
from tqdm import tqdm

from app.codecs.outputs import LARGE_OUTPUTS, Outputs, default_outputs, every_format
from app.inference import InferenceError
from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE
from app.inference.providers import CHOICES, PRECISIONS
from app.inference.tiler import ProgressFn
from app.models.repository import model_file
from app.pipeline import files as named
from app.pipeline.batch import Large, Small, route
from app.pipeline.context import Context, Setup
from app.pipeline.dicomweb import SeriesUrl, fetched
from app.pipeline.files import expand, remove, set_aside, size, target, write_atomically
from app.settings import DEFAULT_MODEL


class Run:
    """One invocation: the shared context, and the input -> output of each format."""

    def __init__(self, args: argparse.Namespace, outputs: Outputs) -> None:
        self.args, self.outputs = args, outputs
        chosen = setup(args)
        self.context = Context.load(chosen)
        self.cluster = None
        self.claimed: dict[Path, Path] = {}  # output -> the input it is the output of
        if args.dask:
            from app.pipeline.dask import Cluster

            self.cluster = Cluster(args.dask, chosen, self.context.model.sha256)

    def route(self, source: Path) -> tuple[str, bool]:
        """(format, whether it goes the large way): batch.route with --format, --max-pixels."""
        a, card, limit = self.args, self.context.model.card, "--max-pixels"
        return route(source, a.format, a.max_pixels, self.outputs, limit, card, a.pixel_size)

    def extension(self, name: str, large: bool) -> str:
        if large:
            return LARGE_OUTPUTS[name].extension
        return self.outputs.extension(name)

    def small(self, source: Path, name: str, bar: tqdm) -> tuple[bytes, str, dict[str, Any]]:
        return Small(self.context, self.outputs, name)(source, tile_bar(bar))

    def done(self, source: Path, extension: str) -> Path | None:
        """The output of ``source`` with ``extension`` when it exists already."""
        existing = [target(self.args.out, source, extension, m) for m in (None, "image/tiff")]
        return next((p for p in existing if p.exists()), None)

    def small_todo(self, source: Path) -> str | None:
        """The format of an in-memory input still to do, else None."""
        try:
            name, large = self.route(source)
        except Exception:  # reported when its turn comes (``one``)
            return None
        done = self.done(source, self.extension(name, large))
        return None if large or (done and not self.args.overwrite) else name

    def one_series(self, series: SeriesUrl) -> dict[str, Any]:
        """A DICOMweb series: fetched into DIR/.dicomweb/, segmented as a DICOM WSI folder,
        removed; skipped without a fetch when an output of it is there."""
        local = self.args.out / ".dicomweb" / f"{series.series}.dicomweb"  # stem: the UID
        formats = [self.args.format] if self.args.format else ["png", "ome-zarr"]
        extensions = [LARGE_OUTPUTS[n].extension for n in formats if n in LARGE_OUTPUTS]
        extensions += [self.outputs.extension(n) for n in formats if n in self.outputs]
        done = next(filter(None, (self.done(local, e) for e in extensions)), None)
        row: dict[str, Any] = {"input": series.shown}
        if done is not None and not self.args.overwrite:
            return row | {"output": str(done), "status": "skipped"}
        try:
            token = os.environ.get("UNET_DICOMWEB_TOKEN") or None
            bar = tqdm(desc="fetching", unit="instance", leave=False, file=sys.stderr)
            with bar, fetched(series, local, token=token, progress=tile_bar(bar)) as folder:
                return self.one(folder) | row
        except Exception as exc:
            tqdm.write(f"unet-segment: {series.shown}: {exc}", file=sys.stderr)
            return row | {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}

    def one(self, source: Path) -> dict[str, Any]:
        """Segment one input; its row of the summary. Whatever goes wrong with this input
        is reported in its row, and the batch goes on (Ctrl-C stops it)."""
        row: dict[str, Any] = {"input": str(source)}
        began = time.perf_counter()
        try:
            name, large = self.route(source)
            extension = self.extension(name, large)
            named.claim(self.claimed, target(self.args.out, source, extension), source)
            done = self.done(source, extension)
            if done is not None and not self.args.overwrite:
                return row | {"output": str(done), "status": "skipped", "format": name}
            old = set_aside(done) if done is not None else None  # back in place on failure
            try:
                path, facts = self.produce(source, name, large, extension)
            except BaseException:
                if old is not None and done is not None:
                    os.replace(old, done)
                raise
            if old is not None:
                remove(old)
            row |= {"output": str(path), "status": "ok", "format": name, **facts}
            row["bytes"] = size(path)
        except Exception as exc:
            row |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            tqdm.write(f"unet-segment: {source}: {exc}", file=sys.stderr)
        row["seconds"] = round(time.perf_counter() - began, 3)
        return row

    def produce(
        self, source: Path, name: str, large: bool, extension: str
    ) -> tuple[Path, dict[str, Any]]:
        """Write the output of ``source``: (its path, facts for the summary)."""
        path = target(self.args.out, source, extension)
        with tqdm(desc="tiles", leave=False, file=sys.stderr) as bar:
            if large:
                c = self.cluster
                streamed = Large(self.context, name, c.blocks if c else None, c.map if c else None)
                return path, streamed(source, path, stage_bar(bar))
            small = self.cluster.small if self.cluster else self.small
            body, media_type, facts = small(source, name, bar)
            path = target(self.args.out, source, extension, media_type)
            write_atomically(path, body)
            return path, facts


def tile_bar(bar: tqdm) -> ProgressFn:
    """progress(done, total) that moves ``bar``."""

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    return progress


def stage_bar(bar: tqdm) -> Callable[[str, int, int], None]:
    """progress(stage, done, total) that names the stage on ``bar`` and moves it."""
    move = tile_bar(bar)

    def progress(stage: str, done: int, total: int) -> None:
        bar.set_description(stage)
        move(done, total)

    return progress


def setup(args: argparse.Namespace) -> Setup:
    fields = ("providers", "precision", "tile", "batch", "threshold", "tta", "min_area", "objects")
    more = {"max_pixels": args.max_pixels, "probability": args.probability,
            "skip_background": args.skip_background, "pixel_size": args.pixel_size}  # fmt: skip
    more["model"] = args.model.absolute()  # Dask workers elsewhere open it by this path
    return Setup(**{f: getattr(args, f) for f in fields}, **more)


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    series = [s for s in map(SeriesUrl.parse, args.inputs) if s is not None]
    paths, empty = expand(i for i in args.inputs if not SeriesUrl.parse(i))
    files: list[Path | SeriesUrl] = [*paths, *series]
    for given in empty:  # a typo must not pass for a batch that did all it was given
        print(f"unet-segment: {given}: {named.NOTHING}", file=sys.stderr)
    if not files:
        print("unet-segment: no input files found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    batch = Run(args, outputs)
    summary = [{"input": given, "status": "failed", "error": named.NOTHING} for given in empty]
    try:
        if batch.cluster:  # the small images of the batch start on the workers at once
            todo = [(f, batch.small_todo(f)) for f in files if isinstance(f, Path)]
            batch.cluster.start([(f, name) for f, name in todo if name is not None])
        for source in tqdm(files, desc="files", unit="file", file=sys.stderr):
            summary.append(
                batch.one(source) if isinstance(source, Path) else batch.one_series(source)
            )
    finally:
        if batch.cluster:
            batch.cluster.close()
        write_atomically(args.out / "summary.json", json.dumps(summary, indent=1).encode())
    return 1 if any(row["status"] == "failed" for row in summary) else 0


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
        prog="unet-segment",
        description=__doc__.split("\n\n")[0],
        epilog="The manual: docs/large-images.md.",
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT", help="files, folders, globs, DICOMweb series URLs")
    add("--model", type=Path, default=DEFAULT_MODEL, help="the ONNX model")
    add("--model-repository", type=Path, metavar="DIR",
        default=os.environ.get("UNET_MODEL_REPOSITORY") or None,
        help="a folder of models, over --model (default: UNET_MODEL_REPOSITORY)")  # fmt: skip
    add("--model-name", metavar="NAME",
        help="DIR/NAME.onnx (default: UNET_DEFAULT_MODEL, else DIR's only model)")  # fmt: skip
    formats = every_format(outputs)
    add("--format", choices=formats, help="default: png up to --max-pixels, ome-zarr above")
    add("--out", type=Path, default=Path("."), help="the output folder")
    add("--tile", type=count(1), default=CPU_TILE_SIZE, help="largest tile side, px")
    add("--batch", type=count(1), default=CPU_BATCH_SIZE, help="tiles per run")
    add("--threshold", type=float, help="default: the card's, else 0.5")
    add("--tta", action="store_true", help="mean over the four flips")
    add("--min-area", type=count(0), help="object formats: smallest object, px")
    add("--objects", action="store_true", help="format overlay: outline each object")
    add("--providers", default="auto", choices=CHOICES, help="auto: CUDA, else OpenVINO, else cpu")
    add("--precision", default="auto", choices=PRECISIONS, help="auto: bf16 where the CPU has it")
    add("--max-pixels", type=count(1), default=Setup.max_pixels, help="largest in-memory image, px")
    add("--overwrite", action="store_true", help="redo inputs already done")
    add("--probability", action="store_true", help="ome-zarr: also p(class 1), 16-bit")
    add("--skip-background", action="store_true",
        help="large images: predict only blocks near tissue (brightfield slides)")  # fmt: skip
    add("--pixel-size", type=float, metavar="UM",
        help="large images: their pixel size in µm, over what the file says")  # fmt: skip
    add("--dask", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://scheduler:8786")
    args = parser.parse_args(argv)
    if args.model_repository is not None or args.model_name is not None:
        name = args.model_name or os.environ.get("UNET_DEFAULT_MODEL") or None
        try:
            args.model = model_file(args.model_repository, name)
        except ValueError as exc:
            parser.error(str(exc))
    if args.pixel_size is not None and not 0 < args.pixel_size <= 10_000:
        parser.error(f"--pixel-size must be in (0, 10000] µm, got {args.pixel_size}")
    if args.threshold is not None and not 0 < args.threshold < 1:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.objects and args.format != "overlay":
        parser.error("--objects outlines objects in an overlay: use it with --format overlay")
    if args.probability and args.format not in (None, "ome-zarr"):
        parser.error("--probability is stored in an OME-Zarr: use it with --format ome-zarr")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    outputs = default_outputs()
    args = parse_args(argv, outputs)
    signal.signal(signal.SIGTERM, _interrupt)  # a batch system's stop: clean up as on Ctrl-C
    # One zarr codec thread: a block is one chunk, so more threads add nothing but malloc
    # arenas (measured, 16384² OME-TIFF, tiny model: peak RSS 397 -> 344 MB, same time).
    zarr.config.set({"threading.max_workers": 1})
    try:
        return run(args, outputs)
    except KeyboardInterrupt:
        print(
            "unet-segment: interrupted; finished outputs are kept, none is half-written",
            file=sys.stderr,
        )
        return 130
    except (InferenceError, ValueError, OSError) as exc:  # the model, a tiling, the cluster
        print(f"unet-segment: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m app.cli: the same as unet-segment
    sys.exit(main())
