"""The GeoJSON of a large image's objects, written block by block (app/pipeline/objects.py
finds them). Each object is drawn by the block that holds the top-left corner of its
bounding box, from the rectangle of its bounding box, so an object that spans blocks
is one Feature whose polygons are exactly its pixels -- never cut at a seam.

Per object: area (px; in µm² too when the pixel size is known) and score, the mean of
its class's probability over its pixels as stored at 16 bits (``round(p * 65535)``;
within 1e-5 of the in-memory float mean).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from app.codecs.outputs.base import json_bytes
from app.codecs.outputs.geojson import HEAD, TAIL, feature
from app.codecs.polygons import outlines
from app.codecs.pyramid import LabelStore
from app.inference.blocks import Block, BlockGrid
from app.pipeline.objects import Found, Mapper, local_map

LARGEST = 8192 * 8192  # px: the most a block's objects may cover together (their boxes)


def measure_block(path: str, block: Block, classes: npt.NDArray[np.int64]) -> tuple[Any, ...]:
    """(ids, pixels, summed 16-bit p(class), boxes as y0, x0, y1, x1) of the block's objects."""
    store = LabelStore.open(Path(path))
    labels = np.asarray(store.labels[block.rows, block.cols]).astype(np.int64)
    ids, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)
    area = np.bincount(dense.ravel(), minlength=len(ids))
    sums = np.zeros(len(ids))
    for c in np.unique(classes[ids[ids > 0]]):
        p = np.asarray(store.scratch(f"p{c}")[block.rows, block.cols], dtype=np.float64)
        mine = classes[ids] == c
        sums[mine] = np.bincount(dense.ravel(), weights=p.ravel(), minlength=len(ids))[mine]
    boxes = np.zeros((len(ids), 4), dtype=np.int64)
    for i, box in enumerate(ndimage.find_objects(dense + 1)):
        rows, cols = box
        boxes[i] = (rows.start, cols.start, rows.stop, cols.stop)
    boxes += [block.rows.start, block.cols.start, block.rows.start, block.cols.start]
    keep = ids > 0
    return ids[keep], area[keep], sums[keep] / 65535, boxes[keep]


def features_block(
    path: str,
    block: Block,
    owned: npt.NDArray[np.int64],
    boxes: npt.NDArray[np.int64],
    facts: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]],
    names: list[str],
    scale: tuple[float, float] = (1.0, 1.0),
    pixel_um2: float | None = None,
) -> str:
    """The Features of the objects ``owned`` (ids, with their boxes) as JSON, comma-joined;
    scale: level-0 pixels (rows, cols) per pixel of the store (its area too); pixel_um2:
    a level-0 pixel's area in µm², when known."""
    if len(owned) == 0:
        return ""
    y0, x0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    y1, x1 = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    if (y1 - y0) * (x1 - x0) > LARGEST:
        raise ValueError(
            f"the objects starting in block {block.rows.start},{block.cols.start} span "
            f"{x1 - x0} x {y1 - y0} px, too much to outline at once; use format=instances"
        )
    store = LabelStore.open(Path(path))
    region = np.asarray(store.labels[y0:y1, x0:x1]).astype(np.int64)
    region[~np.isin(region, owned)] = 0
    shapes = outlines(region).polygons
    classes, area, score = facts
    out, corner, factor = [], np.array([x0, y0]), np.array([scale[1], scale[0]])
    scaled = scale != (1.0, 1.0)
    for i in owned:
        parts = [[ring + corner for ring in polygon] for polygon in shapes[i]]
        if scaled:  # a resampled image's: level-0 coordinates, to 1/1000 px
            parts = [[np.round(ring * factor, 3) for ring in polygon] for polygon in parts]
        pixels = round(int(area[i]) * scale[0] * scale[1])
        item = feature(
            parts, int(i), names, int(classes[i]), pixels, float(score[i]), pixel_um2=pixel_um2
        )
        out.append(json_bytes(item).decode())
    return ",".join(out)


def write_geojson(
    store: LabelStore,
    grid: BlockGrid,
    found: Found,
    names: list[str],
    target: Path,
    run: Mapper = local_map,
    progress: Callable[[int, int], None] | None = None,
    scale: tuple[float, float] = (1.0, 1.0),
    pixel_um2: float | None = None,
) -> None:
    """A FeatureCollection of every object in ``store`` into ``target``, block by block;
    scale: level-0 pixels (rows, cols) per pixel of the store (a resampled image's);
    pixel_um2: a level-0 pixel's area in µm² (each object's ``area_um2``), if known."""
    blocks, path, n = list(grid), str(store.path), found.count
    area, sums = np.zeros(n + 1, np.int64), np.zeros(n + 1)
    boxes = np.tile(np.array([[np.iinfo(np.int64).max] * 2 + [0, 0]]), (n + 1, 1))
    for ids, a, s, b in run(measure_block, [(path, block, found.classes) for block in blocks]):
        area[ids] += a
        sums[ids] += s
        boxes[ids, :2] = np.minimum(boxes[ids, :2], b[:, :2])
        boxes[ids, 2:] = np.maximum(boxes[ids, 2:], b[:, 2:])
    facts = (found.classes, area, sums / np.maximum(area, 1))
    (ch, cw), columns = grid.chunks, -(-grid.plan.width // grid.chunks[1])
    owner = (boxes[:, 0] // ch) * columns + boxes[:, 1] // cw
    jobs = []
    for index, block in enumerate(blocks):
        owned = np.flatnonzero(owner == index)
        owned = owned[owned > 0]
        jobs.append((path, block, owned, boxes[owned], facts, names, scale, pixel_um2))
    with target.open("w") as out:
        out.write(HEAD.decode())
        first = True
        for done, text in enumerate(run(features_block, jobs), start=1):
            if text:
                out.write(text if first else "," + text)
                first = False
            if progress is not None:
                progress(done, len(jobs))
        out.write(TAIL.decode())
