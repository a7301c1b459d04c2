"""Images beyond memory: ``unet-segment`` on synthetic tiled OME-TIFFs and OME-Zarrs.

    python -m bench.large flat                       # tiny model: 4096², 16384², 32768²
    python -m bench.large gigapixel --side 32768     # the shipped model, in-process vs --dask
    python -m bench.large gigapixel --side 8192 --dask-only --json out.json
    python -m bench.large gigapixel --providers cuda  # on a GPU machine
    python -m bench.large engines --side 16384       # the default engine against ORT fp32
    python -m bench.large slide --side 16384         # 75 % glass: with and without skipping
    python -m bench.large resolution --side 8192     # 0.25 µm/px against a 0.5 µm/px card

``flat``: peak RSS and time of ``unet-segment`` (each run a fresh process, its
peak RSS from ``ru_maxrss``) on tiled OME-TIFF and OME-Zarr inputs of each side,
with a tiny model (depth 4, 2 channels: the paper's tiling, little compute), so
that what grows with the image -- if anything -- is the pipeline's memory.
``gigapixel``: the shipped model on a mosaic of ISBI 2012 slices (noise when
``../shared/data`` is absent), in-process against ``--dask`` with a local
cluster of 2 worker processes (1 thread each), the same command otherwise; the
workers' peak RSS is read from inside them. ``slide``: an RGB brightfield-like
slide (a disc of tissue, the slices tinted as H&E, on 75 % noisy glass; pyramidal
OME-TIFF) through the shipped model with and without ``--skip-background``. Inputs are
written tile by tile (no whole image in memory) into a scratch folder, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from PIL import Image

from bench.report import report
from deploy.demo_model import UNetSpec, default_card, save_model

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"
TILE = 512


def _slices() -> list[np.ndarray]:
    paths = sorted((ISBI / "train" / "image").glob("*.png"))
    paths += sorted((ISBI / "test" / "image").glob("*.png"))
    return [np.asarray(Image.open(p).convert("L")) for p in paths]


def content() -> str:
    """What the synthetic images are made of (stated in the results)."""
    return "ISBI 2012 slices" if _slices() else f"seeded noise (no slices under {ISBI})"


def tiles(side: int) -> Iterator[np.ndarray]:
    """The image's 512 x 512 tiles, row-major: ISBI slices in turn, else seeded noise."""
    slices = _slices()
    count = -(-side // TILE)
    for index in range(count * count):
        if slices:
            yield slices[index % len(slices)]
        else:
            yield np.random.default_rng(index).integers(0, 256, (TILE, TILE), dtype=np.uint8)


def write_tiff(path: Path, side: int) -> None:
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(tiles(side), shape=(side, side), dtype=np.uint8, tile=(TILE, TILE))


def write_zarr(path: Path, side: int) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=(side, side), chunks=(TILE, TILE), dtype=np.uint8)
    count = -(-side // TILE)
    for index, tile in enumerate(tiles(side)):
        r, c = divmod(index, count)
        array[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scale = [{"type": "scale", "scale": [1.0, 1.0]}]
    datasets = [{"path": "0", "coordinateTransformations": scale}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]


# Runs one command and prints its peak RSS: RUSAGE_CHILDREN of a process with one child.
_MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def segment(inputs: Path, out: Path, model: Path, *extra: str) -> dict[str, Any]:
    """``unet-segment`` in a fresh process: exit code, seconds, peak RSS (MB)."""
    command = [sys.executable, "-m", "app.cli", str(inputs), "--model", str(model)]
    command += ["--out", str(out), "--format", "ome-zarr", "--overwrite", *extra]
    shell = [sys.executable, "-c", _MEASURE, *command]
    result = subprocess.run(shell, capture_output=True, text=True, check=False)
    code, seconds, rss = result.stdout.split()[-3:]
    if int(code) != 0:
        raise SystemExit(f"unet-segment failed ({code}):\n{result.stderr[-2000:]}")
    return {"seconds": round(float(seconds), 2), "peak_rss_mb": round(int(rss) / 1024)}


def flat(scratch: Path, sides: list[int]) -> dict[str, Any]:
    model = scratch / "tiny.onnx"
    spec = UNetSpec(depth=4, base=2)
    save_model(model, spec, seed=1, card=default_card(spec, name="tiny"))
    rows = []
    for kind, side in [(k, s) for k in ("ome-tiff", "ome-zarr") for s in sides]:
        source = scratch / (f"in{side}.ome.tif" if kind == "ome-tiff" else f"in{side}.ome.zarr")
        (write_tiff if kind == "ome-tiff" else write_zarr)(source, side)
        row = {"input": kind, "side": side, **segment(source, scratch / "out", model)}
        row["seconds_per_mp"] = round(row["seconds"] / (side * side / 1e6), 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        shutil.rmtree(source, ignore_errors=True) if source.is_dir() else source.unlink()
        shutil.rmtree(scratch / "out")
    ratios = {}
    for kind in ("ome-tiff", "ome-zarr"):
        peaks = [r["peak_rss_mb"] for r in rows if r["input"] == kind]
        ratios[kind] = round(max(peaks) / min(peaks), 3)
    model_name = "depth 4, 2 channels (tiny)"
    return {"model": model_name, "content": content(), "runs": rows, "rss_ratio": ratios}


def _worker_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def gigapixel(scratch: Path, side: int, dask_only: bool, providers: str) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    source = scratch / "mosaic.ome.tif"
    write_tiff(source, side)
    model, mp = REPO / "model" / "unet.onnx", side * side / 1e6
    rows = []
    if not dask_only:
        run = segment(source, scratch / "a", model, "--providers", providers)
        rows.append({"run": f"in-process, {providers}", **run})
    local = {"n_workers": 2, "threads_per_worker": 1, "host": "127.0.0.1"}
    with (
        LocalCluster(**local, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        address = cluster.scheduler_address
        on_dask = segment(source, scratch / "b", model, "--dask", address, "--providers", providers)
        row = {"run": "dask, 2 local workers", **on_dask}
        row["worker_peak_rss_mb"] = sorted(client.run(_worker_peak).values())
        rows.append(row)
    for row in rows:
        row["mp_per_s"] = round(mp / row["seconds"], 3)
    if not dask_only:
        a, b = (zarr.open_group(str(scratch / x / "mosaic.ome.zarr"))["0"] for x in "ab")
        rows[-1]["equal_to_in_process"] = all(
            np.array_equal(a[r : r + 4096], b[r : r + 4096]) for r in range(0, side, 4096)
        )
    facts = {"side": side, "megapixels": round(mp, 1), "model": str(model.name)}
    return facts | {"content": content(), "runs": rows}


def engines(scratch: Path, side: int) -> dict[str, Any]:
    """The shipped model on the mosaic, in-process, on the default engine (``auto``, ``auto``:
    OpenVINO bf16 where the CPU computes it) and on ONNX Runtime fp32, one after the other."""
    source = scratch / "mosaic.ome.tif"
    write_tiff(source, side)
    model, mp = REPO / "model" / "unet.onnx", side * side / 1e6
    runs = {"default": [], "cpu-fp32": ["--providers", "cpu", "--precision", "fp32"]}
    rows = []
    for name, extra in runs.items():
        row = {"run": name, **segment(source, scratch / name, model, *extra)}
        row["mp_per_s"] = round(mp / row["seconds"], 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    a, b = (zarr.open_group(str(scratch / x / "mosaic.ome.zarr"))["0"] for x in runs)
    equal = sum(int((a[r : r + 4096] == b[r : r + 4096]).sum()) for r in range(0, side, 4096))
    facts = {"side": side, "megapixels": round(mp, 1), "model": str(model.name)}
    return facts | {
        "content": content(),
        "runs": rows,
        "default_speedup": round(rows[1]["seconds"] / rows[0]["seconds"], 2),
        "mask_pixels_equal": round(equal / (side * side), 5),
    }


GLASS = np.array([236, 233, 238], np.float32)
EOSIN, HEMATOXYLIN = np.array([225, 140, 185], np.float32), np.array([110, 55, 150], np.float32)


def slide_tiles(side: int, scale: int, tissue: float) -> Iterator[np.ndarray]:
    """The RGB tiles of level ``scale`` (1, 2, 4, ...) of the slide: a centred disc of
    ``tissue`` of the area (the slices, dark -> hematoxylin, light -> eosin) on glass."""
    slices, radius = _slices(), side * (tissue / np.pi) ** 0.5
    count = -(-side // scale // TILE)
    for index in range(count * count):
        r, c = divmod(index, count)
        yy, xx = np.mgrid[0:TILE, 0:TILE] * scale
        yy, xx = yy + r * TILE * scale, xx + c * TILE * scale
        inside = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= radius**2
        rng = np.random.default_rng(index + 1000 * scale)
        gray = slices[index % len(slices)] if slices else rng.integers(0, 256, (TILE, TILE))
        weight = (gray.astype(np.float32) / 255)[..., None]
        stain = weight * EOSIN + (1 - weight) * HEMATOXYLIN
        pixels = np.where(inside[..., None], stain, GLASS) + rng.normal(0, 3, (TILE, TILE, 3))
        yield np.clip(pixels, 0, 255).astype(np.uint8)


def write_slide(path: Path, side: int, tissue: float, levels: int = 4) -> None:
    """A tiled pyramidal OME-TIFF (levels as sub-IFDs, each written tile by tile)."""
    options = {"tile": (TILE, TILE), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for level in range(levels):
            scale, size = 2**level, -(-side // 2**level)
            extra = {"subifds": levels - 1} if level == 0 else {"subfiletype": 1}
            tif.write(slide_tiles(side, scale, tissue), shape=(size, size, 3), dtype=np.uint8,
                      **options, **extra)  # fmt: skip


def slide(scratch: Path, side: int, tissue: float) -> dict[str, Any]:
    """The shipped model, in-process, with and without --skip-background; the outputs
    compared inside the blocks that ran."""
    source = scratch / "slide.ome.tif"
    write_slide(source, side, tissue)
    model, mp = REPO / "model" / "unet.onnx", side * side / 1e6
    runs = {"all blocks": [], "--skip-background": ["--skip-background"]}
    rows = []
    for name, extra in runs.items():
        out = scratch / ("skip" if extra else "all")
        row = {"run": name, **segment(source, out, model, *extra)}
        summary = json.loads((out / "summary.json").read_text())[0]
        row |= {"tiles": summary["tiles"], "mp_per_s": round(mp / row["seconds"], 3)}
        row["background_skipped"] = summary.get("background_skipped")
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    a, b = (zarr.open_group(str(scratch / x / "slide.ome.zarr"))["0"] for x in ("all", "skip"))
    ran = same = 0
    for r in range(0, side, 4096):
        x, y = a[r : r + 4096], b[r : r + 4096]
        kept = y > 0  # a block that ran and found foreground
        ran, same = ran + int(kept.sum()), same + int((x[kept] == y[kept]).sum())
    facts = {"side": side, "megapixels": round(mp, 1), "model": str(model.name)}
    return facts | {
        "content": f"a disc of tissue ({tissue:.0%}) tinted from {content()}, on glass",
        "runs": rows,
        "speedup": round(rows[0]["seconds"] / rows[1]["seconds"], 2),
        "foreground_of_run_blocks_equal": round(same / max(ran, 1), 6),
    }


def resolution(scratch: Path, side: int) -> dict[str, Any]:
    """The shipped model with a card at 0.5 µm/px: the slide scanned at 0.25 µm/px (no
    pyramid: resampled by the area mean), against the same scene scanned at 0.5 µm/px (the
    fine image through a Gaussian of sigma 0.8 px, every other pixel: a scanner's optics,
    not our filter); the fine run's classes, every other pixel, against the coarse run's."""
    from scipy import ndimage

    model = scratch / "half.onnx"
    shutil.copy(REPO / "model" / "unet.onnx", model)
    card = dict(load_model_card(REPO / "model" / "unet.onnx"), pixel_size_um=0.5)
    (scratch / "half.json").write_text(json.dumps(card))
    count = side // TILE
    fine = np.empty((side, side, 3), np.uint8)
    for index, tile in enumerate(slide_tiles(side, 1, 0.25)):
        r, c = divmod(index, count)
        fine[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
    coarse = ndimage.gaussian_filter(fine, sigma=(0.8, 0.8, 0))[::2, ::2]
    rows, runs = [], ("fine", "coarse")
    for name, size, image in zip(runs, (0.25, 0.5), (fine, coarse), strict=True):
        source, per_cm = scratch / f"{name}.tif", 1e4 / size
        tifffile.imwrite(source, image, bigtiff=True, tile=(TILE, TILE), photometric="rgb",
                         resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")  # fmt: skip
        length = image.shape[0]
        row = {"run": f"{name}: {size} µm/px, {length}²", **segment(source, scratch / name, model)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    del fine, coarse
    a, b = (zarr.open_group(str(scratch / x / f"{x}.ome.zarr"))["0"] for x in runs)
    same = total = 0
    for r in range(0, side, 4096):
        x, y = a[r : r + 4096 : 2, ::2], b[r // 2 : (r + 4096) // 2]
        same, total = same + int((x == y).sum()), total + x.size
    return {
        "side": side, "model": "unet.onnx with pixel_size_um 0.5", "runs": rows,
        "fine_every_other_pixel_equal_to_coarse": round(same / total, 4),
        "content": f"a disc of tissue tinted from {content()}, on glass",
    }  # fmt: skip


def load_model_card(path: Path) -> dict[str, Any]:
    """The card embedded in an ONNX model (its metadata's ``unet`` entry)."""
    import onnx

    found = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return dict(json.loads(found["unet"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["flat", "gigapixel", "engines", "slide", "resolution"])
    parser.add_argument("--tissue", type=float, default=0.25, help="slide: its tissue's share")
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--dask-only", action="store_true")
    parser.add_argument("--providers", default="cpu", help="gigapixel: cpu, cuda or tensorrt")
    parser.add_argument("--scratch", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
        began = time.perf_counter()
        if args.what == "flat":
            results = flat(Path(folder), args.sides)
        elif args.what == "engines":
            results = engines(Path(folder), args.side)
        elif args.what == "slide":
            results = slide(Path(folder), args.side, args.tissue)
        elif args.what == "resolution":
            results = resolution(Path(folder), args.side)
        else:
            results = gigapixel(Path(folder), args.side, args.dask_only, args.providers)
        results["bench_seconds"] = round(time.perf_counter() - began)
    report(results, args.json)


if __name__ == "__main__":
    main()
