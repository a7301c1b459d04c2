"""What objects cost against inference: a 4096 x 4096 EM mosaic through the shipped model.

    python -m bench.objects                   # 8 x 8 ISBI 2012 slices, the shipped model
    python -m bench.objects --side 2048 --json out.json
    python -m bench.objects --providers cpu   # ONNX Runtime fp32 instead of the default

The mosaic is made of ``../shared/data/isbi2012`` slices (train, then test), so
the objects are real cells (6,141 at 4096 px with the shipped model, not the
issue's ~20,000). Timed in one process after a warm-up, each the median of
``--repeats`` runs (3; the machines are shared and noisy): inference
(probabilities + mask, the service's tiling), objects by the card's recipe (the
watershed for the shipped model), then the encoders of ``format=objects`` and
``format=geojson`` (and ``instances``) on the prediction. Each is reported as a
share of the inference time; then the same for the issue's case, a mask of about
21,000 cells (``mask_*``: random points' nearest regions, one-pixel lines between
them; the components recipe). Then the large-image path on the same mosaic
(``format=instances`` block by block, app/pipeline/objects.py): its time end to end and
how its objects agree with the in-memory ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image
from scipy import ndimage, sparse

from app.codecs.images import DecodedImage
from app.codecs.outputs import LARGE_OUTPUTS, Options, Provenance, default_outputs
from app.codecs.outputs._objects import objects_of
from app.inference import Predictor, load_model
from app.inference.card import Recipe
from app.inference.objects import FOUR
from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE, Prediction
from app.pipeline.large import segment_large
from bench.report import report

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "data" / "isbi2012"


def mosaic(side: int) -> np.ndarray:
    """side x side uint8 made of 512 x 512 ISBI slices, row by row."""
    paths = sorted((ISBI / "train" / "image").glob("*")) + sorted(
        (ISBI / "test" / "image").glob("*")
    )
    if not paths:
        raise SystemExit(f"no ISBI 2012 slices under {ISBI}")
    tiles = side // 512
    rows = []
    for r in range(tiles):
        row = [
            np.asarray(Image.open(paths[(r * tiles + c) % len(paths)]).convert("L"))
            for c in range(tiles)
        ]
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def timed(fn: Any, repeats: int = 1) -> tuple[Any, float]:
    """fn's result and its median time over ``repeats`` runs."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--side", type=int, default=4096, help="mosaic side, a multiple of 512")
    parser.add_argument("--cells", type=int, default=21_000, help="cells of the synthetic mask")
    parser.add_argument("--no-stream", action="store_true", help="skip the large-image path")
    parser.add_argument(
        "--repeats", type=int, default=3, help="in-memory timings: the median of this many runs"
    )
    parser.add_argument(
        "--providers", default="auto", help="UNET_PROVIDERS (auto: the service's default)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    loaded = load_model(args.model, args.providers)
    predictor = Predictor(
        loaded.engine.run, loaded.card, tile_size=CPU_TILE_SIZE, batch_size=CPU_BATCH_SIZE
    )
    frame = mosaic(args.side)
    predictor.predict(frame[:512, :512])  # warm-up
    threshold = loaded.card.threshold or 0.5
    prediction, inference_s = timed(
        lambda: predictor.predict(frame, threshold=threshold), args.repeats
    )
    model, options = Provenance(loaded.card, loaded.engine.sha256), Options(threshold=threshold)
    objects, objects_s = timed(lambda: objects_of(prediction, model, options), args.repeats)
    image = DecodedImage("png", [frame], frame.shape[1], frame.shape[0])
    results: dict[str, Any] = {
        "side": args.side,
        "repeats": args.repeats,
        "model": loaded.card.name,
        "recipe": loaded.card.objects.model_dump(),
        "objects": objects.count,
        "inference_s": round(inference_s, 2),
        "find_objects_s": round(objects_s, 2),
    }
    results |= encoded("", image, prediction, model, options, inference_s, args.repeats)
    cells, cell_count = voronoi_mask(args.side, args.cells)
    by_components = Provenance(
        loaded.card.model_copy(update={"objects": Recipe()}), loaded.engine.sha256
    )
    results |= {"mask_objects": cell_count}
    results |= encoded("mask_", image, cells, by_components, options, inference_s, args.repeats)
    if not args.no_stream:
        results |= streamed(frame, predictor, model, options, objects.labels)
    report(results, args.json)


def encoded(
    prefix: str,
    image: DecodedImage,
    prediction: Prediction,
    model: Provenance,
    options: Options,
    inference_s: float,
    repeats: int = 1,
) -> dict[str, Any]:
    """Each object format end to end (objects found, measured, encoded): its seconds (the
    median of ``repeats`` runs), size and share of the inference time."""
    outputs, results = default_outputs(), {}
    for name in ("instances", "objects", "geojson"):

        def encode(name: str = name) -> bytes:
            encoder = outputs.encoder(name, image, model, options)
            encoder.add(0, prediction)
            return encoder.finish()

        body, seconds = timed(encode, repeats)
        results[f"{prefix}{name}_s"] = round(seconds, 2)
        results[f"{prefix}{name}_mb"] = round(len(body) / 1e6, 1)
        results[f"{prefix}{name}_share_of_inference"] = round(seconds / inference_s, 3)
    return results


def voronoi_mask(side: int, cells: int) -> tuple[Prediction, int]:
    """The issue's case: a side x side mask of about ``cells`` cells (random points' nearest
    regions, kept apart by one-pixel background lines), probabilities 0.9 / 0.1."""
    rng = np.random.default_rng(0)
    points = rng.integers(0, side, size=(cells, 2))
    seeds = np.zeros((side, side), dtype=np.int32)
    seeds[points[:, 0], points[:, 1]] = np.arange(1, cells + 1)
    _, (rows, cols) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    regions = seeds[rows, cols]
    line = np.zeros((side, side), dtype=bool)
    line[:-1] |= regions[:-1] != regions[1:]
    line[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    mask = (~line).astype(np.uint8)
    count = ndimage.label(mask, structure=FOUR)[1]
    probabilities = np.where(mask > 0, 0.9, 0.1).astype(np.float32)[None]
    return Prediction(probabilities, mask, tiles=0), count


def streamed(
    frame: np.ndarray, predictor: Predictor, model: Provenance, options: Options, labels: np.ndarray
) -> dict[str, Any]:
    """The large-image path on the same mosaic (``instances``, blocks of 2304 px): its time,
    and how its objects agree with the in-memory ones (share of the pixels outside the
    in-memory object that their streamed object overlaps most)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mosaic.instances.ome.zarr"
        output = LARGE_OUTPUTS["instances"]
        result, seconds = timed(
            lambda: segment_large(frame[:, :, None], path, output, predictor, model, options)
        )
        ours = zarr.open_group(str(path), mode="r")["0"][:].astype(np.int64)
    overlap = sparse.coo_matrix((np.ones(ours.size), (ours.ravel(), labels.ravel()))).tocsr()
    best = np.asarray(overlap.argmax(axis=1)).ravel()
    return {
        "streamed_instances_s": round(seconds, 2),
        "streamed_objects": result.objects,
        "streamed_pixels_in_another_object": float((best[ours] != labels).mean()),
    }


if __name__ == "__main__":
    main()
