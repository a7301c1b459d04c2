"""Images beyond memory: block by block from a lazy reader into a store on disk.

The large-image path of DESIGN.md: the image (a lazy reader of
app/codecs/slides.py, or an array) is cut into the blocks of its tile plan
(app/inference/blocks.py); each block is predicted and its class map (and,
when asked, its 16-bit probability) written into the chunk of the store
(app/codecs/pyramid.py) that is that block; then the pyramid levels and the
OME-NGFF metadata; then the output format turns the store into its file.

Memory: one block's input, its tiles' batch and its K x h x w probabilities
(about 2.3k x 2.3k px), whatever the image's size. The result equals, bit for
bit, ``Predictor.predict`` of the whole image in memory (tests/app/test_large.py).
Blocks run here one after another, or as tasks on a Dask cluster
(app/distributed.py) through ``Blocks``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.codecs.masks import to_uint16
from app.codecs.outputs import LargeOutput, Model, Options
from app.codecs.pyramid import LabelStore
from app.inference.blocks import BLOCK_SIZE, Block, BlockGrid, block_grid
from app.inference.objects import class_probability
from app.inference.predictor import Predictor
from app.inference.tiler import ProgressFn, Region


def write_block(
    predictor: Predictor,
    image: Region,
    grid: BlockGrid,
    block: Block,
    options: Options,
    store: LabelStore,
) -> int:
    """Predict ``block`` and write it into ``store``; the number of tiles run."""
    prediction = predictor.predict_block(image, grid, block, threshold=options.threshold)
    store.labels[block.rows, block.cols] = prediction.mask
    if store.probability is not None:
        p = class_probability(prediction.probabilities, options.class_index)
        store.probability[block.rows, block.cols] = to_uint16(p)
    return prediction.tiles


class Blocks(Protocol):
    """Runs every block of ``grid`` into ``store``; ``progress(blocks done, total)``."""

    def __call__(
        self, image: Region, grid: BlockGrid, store: LabelStore, progress: ProgressFn
    ) -> int: ...


def local_blocks(predictor: Predictor, options: Options) -> Blocks:
    """The blocks one after another in this process."""

    def run(image: Region, grid: BlockGrid, store: LabelStore, progress: ProgressFn) -> int:
        tiles = 0
        for done, block in enumerate(grid, start=1):
            tiles += write_block(predictor, image, grid, block, options, store)
            progress(done, len(grid))
        return tiles

    return run


@dataclass
class LargeResult:
    """What one large image took: its size, tiles run, pyramid levels."""

    height: int
    width: int
    tiles: int
    levels: int


def temporary_store(path: Path) -> Path:
    """A folder beside ``path`` for its store while it is made (hidden, unique)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"


def segment_large(
    image: Region,
    path: Path,
    output: LargeOutput,
    predictor: Predictor,
    model: Model,
    options: Options,
    *,
    blocks: Blocks | None = None,
    probability: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    block_size: int = BLOCK_SIZE,
) -> LargeResult:
    """Segment ``image`` (H x W x C, C = 1 or 3, a lazy reader or an array) into ``path``.

    The output appears at ``path`` complete or not at all: the store is made in a
    hidden folder beside it and removed when anything fails (Ctrl-C included).
    progress(stage, done, total): stage ``blocks`` then ``levels``.
    block_size: the target side of a block and of a chunk of the store, px.
    """
    if options.tta:
        raise ValueError("tta is not available for large images yet (blocks run without flips)")
    options.check(model.card)
    height, width = image.shape[:2]
    grid = block_grid(predictor.plan(height, width), block_size)
    work = temporary_store(path)
    try:
        store = LabelStore(work, height, width, grid.chunks, probability)

        def stage(name: str) -> ProgressFn:
            return lambda done, total: progress(name, done, total) if progress else None

        run = blocks or local_blocks(predictor, options)
        tiles = run(image, grid, store, stage("blocks"))
        levels = store.build_levels(stage("levels"))
        card = model.card
        store.describe(
            path.name,
            card.classes,
            {"name": card.name, "version": card.version, "sha256": model.sha256},
        )
        output.finish(store, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LargeResult(height, width, tiles, levels)
