"""Inference-core benchmark: whole-image vs overlap-tile vs MONAI, side by side in one run.

    python -m bench.inference                 # 512, 2048, 4096 px; base-32 U-Nets (make bench)
    python -m bench.inference --base 64       # the paper's widths
    python -m bench.inference --quick         # tiny nets and images: a smoke check in ~1 min
    python -m bench.inference --json out.json # also save every number

For each image size and each padding (valid, same) of a depth-4 U-Net with
random weights (``deploy.demo_model``), it times whole-image inference (the DESIGN.md
reference; skipped above ``--whole-max``, which is what tiling avoids), tiled
inference through ``Predictor`` and the ONNX Runtime ``Engine``, and, for the
same-padding net, MONAI's ``sliding_window_inference`` over the same weights
in torch. MONAI cannot run a valid-padding net (its windows must give outputs
of the input's size), so that row says so. A large sgemm measured in the same
run (before and after the rest; the better counts) is the yardstick for
GFLOP/s. A tile-size x batch-size sweep on a valid net justifies the CPU
defaults of ``app/inference/predictor.py``.

Each configuration runs in a fresh interpreter (``bench.measure``), so each
peak RSS is its own. Columns are explained in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from app.inference.providers import CHOICES, GPU, PRECISIONS
from bench.measure import Job, measure
from deploy.demo_model import UNetSpec, save_model

ROOT = Path(__file__).resolve().parents[1]  # children import app and bench from here
SGEMM_N = 4096
DEFAULT_SIZES = (512, 2048, 4096)
SWEEP_TILES = (252, 380, 572, 764, 1084)
SWEEP_BATCHES = (1, 2, 4)


@dataclass
class Row:
    """One line of a table: a job and what came of it (a result, or why there is none)."""

    size: int
    padding: str
    method: str
    job: Job | None
    note: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    deviation: str = ""


def sgemm_gflops(n: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n float32 matmul (numpy's BLAS, all its threads)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = perf_counter()
    fn()
    return perf_counter() - start


def build_models(folder: Path, base: int, seed: int) -> dict[str, Path]:
    """The valid and the same U-Net (depth 4, ``base`` channels at the top) as ONNX files."""
    return {
        padding: save_model(folder / f"{padding}.onnx", UNetSpec(4, base, padding=padding), seed)
        for padding in ("valid", "same")
    }


def engine_settings(model: Path, providers: str, threads: int, precision: str) -> dict[str, Any]:
    """The engine's settings, as a session on ``model`` really gets them (opened in a child)."""
    code = (
        "import json, sys; from app.inference import ProviderOptions, load_model; "
        "from bench.measure import ort_settings; m = load_model(sys.argv[1], sys.argv[2], "
        "int(sys.argv[3]), ProviderOptions(precision=sys.argv[4])); "
        "print(json.dumps(ort_settings(m.engine)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model), providers, str(threads), precision],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    settings: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return settings


def run_child(job: Job, index: int, total: int) -> dict[str, Any]:
    """Measure ``job`` in a fresh interpreter; ``{"failed": ...}`` if it dies (e.g. OOM-killed)."""
    what = f"{job.size}x{job.size} {job.padding} {job.method}"
    print(
        f"[{index}/{total}] {what} (tile {job.tile_size}, batch {job.batch_size}) ...",
        file=sys.stderr,
        flush=True,
    )
    start = perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.inference", "--child", json.dumps(asdict(job))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    elapsed = perf_counter() - start
    if proc.returncode != 0:
        print(f"    failed (exit {proc.returncode}) after {elapsed:.0f} s", file=sys.stderr)
        return {"failed": f"failed (exit {proc.returncode})"}
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    print(
        f"    {result['total_s']:.2f} s, peak RSS {result['peak_rss_mib']:.0f} MiB "
        f"({elapsed:.0f} s with start-up)",
        file=sys.stderr,
        flush=True,
    )
    return result


def _job(args: argparse.Namespace, models: dict[str, Path], size: int, padding: str) -> Job:
    return Job(
        method="tiled",
        size=size,
        padding="valid" if padding == "valid" else "same",
        base=args.base,
        model=str(models[padding]),
        tile_size=args.tile,
        batch_size=args.batch,
        providers=args.providers,
        precision=args.precision,
        threads=args.threads,
        monai_mode=args.monai_mode,
        monai_overlap=args.monai_overlap,
    )


def main_rows(args: argparse.Namespace, models: dict[str, Path], scratch: Path) -> list[Row]:
    """whole / tiled / monai rows for every size and padding (jobs not run yet)."""
    rows = []
    for size in args.sizes:
        for padding in ("valid", "same"):
            for method in ("whole", "tiled", "monai"):
                save = str(scratch / f"{size}-{padding}-{method}.npy")
                job = replace(_job(args, models, size, padding), method=method, save=save)
                row = Row(size, padding, method, job)
                if method == "whole" and size > args.whole_max:
                    row.job, row.note = None, "skipped (memory)"
                if method == "monai" and padding == "valid":
                    row.job, row.note = None, "n/a (valid net: output smaller than its window)"
                rows.append(row)
    return rows


def sweep_rows(args: argparse.Namespace, models: dict[str, Path]) -> list[Row]:
    """Tiled runs of a valid net on one image for every tile size x batch size."""
    base = _job(args, models, args.sweep_size, "valid")
    return [
        Row(args.sweep_size, "valid", "tiled", replace(base, tile_size=t, batch_size=b))
        for t in args.sweep_tiles
        for b in args.sweep_batches
    ]


def max_abs_diff(a_path: str, b_path: str) -> float:
    """max |a - b| of two saved H x W probability maps."""
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def fill_deviations(rows: list[Row]) -> None:
    """max |p - p_whole| of tiled and MONAI rows (vs the tiled run where whole was skipped)."""
    saved = {
        (r.size, r.padding, r.method): r.job.save
        for r in rows
        if r.job is not None and r.job.save and "total_s" in r.result
    }
    for row in rows:
        mine = saved.get((row.size, row.padding, row.method))
        refs = [m for m in ("whole", "tiled") if m != row.method]
        if row.method == "whole" or mine is None:
            continue
        for ref in refs:
            other = saved.get((row.size, row.padding, ref))
            if other is not None:
                row.deviation = f"{max_abs_diff(mine, other):.1e} vs {ref}"
                break


HEADERS = (
    "image", "model", "method", "tile x batch", "tiles", "time s", "tiles/s", "MP/s",
    "GFLOP/s", "% sgemm", "outside %", "out/comp", "peak MiB", "+MiB", "max|Δp|",
)  # fmt: skip


def row_cells(row: Row, sgemm: float) -> list[str]:
    """The table cells of one row (see docs/performance.md for each column)."""
    r, head = row.result, [f"{row.size}x{row.size}", row.padding, row.method]
    if "total_s" not in r or row.job is None:
        return [*head, r.get("failed", row.note)]
    total, engine = r["total_s"], r["engine_s"]
    gflops = r["flops"] / engine / 1e9
    tile = "whole" if row.method == "whole" else f"{r['tile_shape'][0]} x {row.job.batch_size}"
    return [
        *head,
        tile,
        str(r["tiles"]),
        f"{total:.2f}",
        f"{r['tiles'] / total:.1f}",
        f"{row.size**2 / 1e6 / total:.2f}",
        f"{gflops:.1f}",
        f"{100 * gflops / sgemm:.0f}",
        f"{100 * (total - engine) / total:.1f}",
        f"{row.size**2 / r['computed_pixels']:.2f}",
        f"{r['peak_rss_mib']:.0f}",
        f"{r['peak_rss_mib'] - r['rss_before_mib']:.0f}",
        row.deviation,
    ]


def _line(cells: list[str], widths: list[int]) -> str:
    """Text columns (image, model, method) left-aligned, numbers right-aligned; a row
    without a result (3 cells and a note) shows its note in place of the numbers."""
    head = [c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True)]
    numbers = [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=False)]
    return "  ".join(head + (numbers if len(cells) == len(widths) else cells[3:])).rstrip()


def print_table(title: str, rows: list[Row], sgemm: float) -> None:
    """One table of rows (see docs/performance.md for the columns)."""
    table = [list(HEADERS), *(row_cells(r, sgemm) for r in rows)]
    full = [line for line in table if len(line) == len(HEADERS)]
    widths = [max(len(line[i]) for line in (table if i < 3 else full)) for i in range(len(HEADERS))]
    print(f"\n{title}")
    for line in table:
        print(_line(line, widths))


def print_sweep_choice(rows: list[Row], tile: int, batch: int) -> None:
    """Name the fastest sweep setting next to the predictor's defaults."""
    done = [(r.result, r.job) for r in rows if "total_s" in r.result and r.job is not None]
    if not done:
        return
    result, job = min(done, key=lambda pair: pair[0]["total_s"])
    print(
        f"fastest: tile {job.tile_size} (runs as {result['tile_shape'][0]}), batch "
        f"{job.batch_size}: {result['total_s']:.2f} s; defaults now: tile {tile}, batch {batch}"
    )


def run_rows(rows: list[Row]) -> None:
    jobs = [r for r in rows if r.job is not None]
    for index, row in enumerate(jobs, 1):
        if row.job is not None:
            row.result = run_child(row.job, index, len(jobs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="image sides")
    p.add_argument("--base", type=int, default=32, help="channels of the top level (paper: 64)")
    p.add_argument("--quick", action="store_true", help="base 8, small images: a smoke check")
    p.add_argument("--json", type=Path, help="also save every number to this file")
    p.add_argument("--providers", default="auto", choices=list(CHOICES))
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: per core)")
    p.add_argument("--tile", type=int, help="tile size (default: predictor.py's, CPU or GPU)")
    p.add_argument("--batch", type=int, help="batch size (default: predictor.py's, CPU or GPU)")
    p.add_argument("--whole-max", type=int, default=2048, help="largest side run whole")
    p.add_argument("--monai-mode", default="gaussian", choices=["gaussian", "constant"])
    p.add_argument("--monai-overlap", type=float, help="default: the overlap of our same tiler")
    p.add_argument("--sweep-size", type=int, default=2048)
    p.add_argument("--sweep-tiles", type=int, nargs="*", default=list(SWEEP_TILES))
    p.add_argument("--sweep-batches", type=int, nargs="*", default=list(SWEEP_BATCHES))
    p.add_argument("--sgemm", type=int, default=SGEMM_N, help="side of the sgemm yardstick")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.base, args.sizes, args.whole_max, args.sgemm = 8, [256, 700, 1000], 700, 1024
        args.sweep_size, args.sweep_tiles, args.sweep_batches = 700, [252, 380, 572], [1, 2]
    return args


def default_tiling(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[int, int]:
    from app.inference import predictor

    gpu = settings["providers"][0] in GPU
    tile = predictor.GPU_TILE_SIZE if gpu else predictor.CPU_TILE_SIZE
    batch = predictor.GPU_BATCH_SIZE if gpu else predictor.CPU_BATCH_SIZE
    args.tile, args.batch = args.tile or tile, args.batch or batch
    return tile, batch


def print_header(args: argparse.Namespace, settings: dict[str, Any], sgemm: float) -> None:
    import onnxruntime

    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"engine (onnxruntime {onnxruntime.__version__}): {json.dumps(settings)}")
    print(f"U-Net depth 4, base {args.base}; tile {args.tile}, batch {args.batch}")
    print(f"sgemm {args.sgemm}^2 float32 (numpy), before the runs: {sgemm:.1f} GFLOP/s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(Job(**json.loads(args.child)))))
        return
    with tempfile.TemporaryDirectory(prefix="unet-bench-") as tmp:
        models = build_models(Path(tmp), args.base, seed=0)
        settings = engine_settings(models["valid"], args.providers, args.threads, args.precision)
        tile, batch = default_tiling(args, settings)
        before = sgemm_gflops(args.sgemm)
        print_header(args, settings, before)
        rows, sweep = main_rows(args, models, Path(tmp)), sweep_rows(args, models)
        run_rows(rows + sweep)
        fill_deviations(rows)
    # The yardstick is measured before and after the runs; the better of the two
    # (the less disturbed by anything else on the machine) is the reference.
    after = sgemm_gflops(args.sgemm)
    sgemm = max(before, after)
    print(f"sgemm after the runs: {after:.1f} GFLOP/s; reference: {sgemm:.1f} GFLOP/s")
    print_table("whole image vs tiled vs MONAI", rows, sgemm)
    if sweep:
        print_table(f"tile x batch sweep, valid net, {args.sweep_size} px", sweep, sgemm)
        print_sweep_choice(sweep, tile, batch)
    if args.json:
        document = {
            "args": vars(args),
            "sgemm_gflops": {"before": before, "after": after, "reference": sgemm},
            "settings": settings,
            "rows": [_row_json(r) for r in rows + sweep],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")


def _row_json(row: Row) -> dict[str, Any]:
    """A row for --json (its job is in ``result["job"]`` when it ran)."""
    return {k: v for k, v in asdict(row).items() if k != "job"}


if __name__ == "__main__":
    main()
