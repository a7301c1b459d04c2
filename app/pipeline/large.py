"""Images beyond memory: block by block from a lazy reader into a store on disk.

The large-image path of DESIGN.md: the image (a lazy reader of
app/codecs/slides.py, or an array) is cut into the blocks of its tile plan
(app/inference/blocks.py); each block is predicted and its class map (and,
when asked, its 16-bit probability) written into the chunk of the store
(app/codecs/pyramid.py) that is that block; then the pyramid levels and the
OME-NGFF metadata; then the output format turns the store into its file.

Memory: one block's input, its tiles' batch and its K x h x w probabilities
(about 2.3k x 2.3k px), whatever the image's size. The result equals, bit for
bit, ``Predictor.predict`` of the whole image in memory (tests/pipeline/test_large.py).
Blocks run here one after another, or as tasks on a Dask cluster
(app/pipeline/dask.py) through ``Blocks``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.codecs.encode import to_uint16
from app.codecs.outputs import LargeOutput, Options, Provenance
from app.codecs.outputs._objects import recipe as objects_recipe
from app.codecs.outputs.base import OUTLINES
from app.codecs.pyramid import LabelStore
from app.inference.blocks import BLOCK_SIZE, Block, BlockGrid, block_grid
from app.inference.card import ModelCard, Recipe
from app.inference.objects import class_probability, watershed_inputs
from app.inference.predictor import Predictor
from app.inference.tiler import ProgressFn, Region
from app.pipeline.geojson import write_geojson
from app.pipeline.objects import Found, Mapper, find_large_objects, local_map
from app.pipeline.resolution import bring_back
from app.pipeline.tissue import background

# px: blocks when the background is skipped. Smaller blocks fit tissue closer: on a disc of
# tissue filling 25 % of a 16384² slide, the shipped model runs 352 of 900 tiles with
# blocks of 2304 px and 276 with 1152 px (bench.large slide).
SKIP_BLOCK_SIZE = 1024


def write_block(
    predictor: Predictor,
    image: Region,
    grid: BlockGrid,
    block: Block,
    options: Options,
    store: LabelStore,
    recipe: Recipe | None = None,
    progress: ProgressFn | None = None,
) -> int:
    """Predict ``block`` and write it into ``store``; the number of tiles run.

    Always its class map; when the store has them, its 16-bit probability, the
    16-bit p(k) of each class k (``scratch/p<k>``: object scores) and, for a watershed
    ``recipe``, its flooding levels and seeds (``scratch/levels``, ``scratch/seeds``).
    progress: the tiles of the block, as ``Predictor.predict_block`` reports them.
    """
    prediction = predictor.predict_block(
        image, grid, block, threshold=options.threshold, tta=options.tta, progress=progress
    )
    here, probs = (block.rows, block.cols), prediction.probabilities
    store.classes[here] = prediction.mask
    if store.probability is not None:
        store.probability[here] = to_uint16(class_probability(probs, options.class_index))
    for k in range(len(predictor.card.classes)):
        if store.has_scratch(f"p{k}"):
            store.scratch(f"p{k}")[here] = to_uint16(class_probability(probs, k))
    if recipe is not None and recipe.method == "watershed":
        levels, seeds = watershed_inputs(probs, recipe)
        store.scratch("levels")[here], store.scratch("seeds")[here] = levels, seeds
    return prediction.tiles


@dataclass(frozen=True)
class Pass:
    """The block pass of one large image: the blocks of ``grid`` of ``image`` predicted into
    ``store`` (with what the objects ``recipe`` needs, when there is one); ``runs``: which
    blocks, in the grid's order (None: all; the others are background, class 0)."""

    image: Region
    grid: BlockGrid
    store: LabelStore
    recipe: Recipe | None
    runs: tuple[bool, ...] | None = None

    def blocks(self) -> list[Block]:
        """The blocks that are predicted."""
        if self.runs is None:
            return list(self.grid)
        return [block for block, run in zip(self.grid, self.runs, strict=True) if run]


# Runs a Pass (``progress(blocks done, total)``); the number of tiles run.
Blocks = Callable[[Pass, ProgressFn], int]


def local_blocks(predictor: Predictor, options: Options, tiles: ProgressFn | None = None) -> Blocks:
    """The blocks one after another in this process; ``tiles``: each block's tile progress."""

    def run(step: Pass, progress: ProgressFn) -> int:
        count, blocks = 0, step.blocks()
        for done, block in enumerate(blocks, start=1):
            count += write_block(
                predictor, step.image, step.grid, block, options, step.store, step.recipe, tiles
            )
            progress(done, len(blocks))
        return count

    return run


@dataclass
class LargeResult:
    """What one large image took: its size, tiles run, pyramid levels, objects found, and
    the fraction of its area skipped as background (None: not asked)."""

    height: int
    width: int
    tiles: int
    levels: int
    objects: int | None = None
    skipped: float | None = None


def temporary_store(path: Path) -> Path:
    """A folder beside ``path`` for its store while it is made (hidden, unique)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"


def _store(
    scratch: Path,
    grid: BlockGrid,
    output: LargeOutput,
    recipe: Recipe | None,
    num_classes: int,
    probability: bool,
) -> LabelStore:
    """The store for ``output``: its image, and the scratch arrays finding objects needs."""
    objects = output.content != "classes"
    height, width = grid.plan.height, grid.plan.width
    dtype = np.uint32 if objects else np.uint8
    store = LabelStore(scratch, height, width, grid.chunks, probability, dtype)
    if recipe is not None:
        store.scratch("classes", np.uint8)
        store.scratch("local", np.uint32)
        if recipe.method == "watershed":
            for name, kind in (("levels", np.uint8), ("seeds", np.uint8), ("flooded", np.uint32)):
                store.scratch(name, kind)
        for k in object_classes(recipe, num_classes) if output.content == "outlines" else ():
            store.scratch(f"p{k}", np.uint16)  # for the objects' scores
    return store


def object_classes(recipe: Recipe, num_classes: int) -> list[int]:
    """The classes an object can have: every non-background class for components; for
    a watershed, every class but the boundary (background too: the ISBI cells)."""
    if recipe.method == "components":
        return list(range(1, num_classes))
    return [k for k in range(num_classes) if k != recipe.boundary_class]


def segment_large(
    image: Region,
    path: Path,
    output: LargeOutput,
    predictor: Predictor,
    model: Provenance,
    options: Options,
    *,
    blocks: Blocks | None = None,
    mapper: Mapper = local_map,
    probability: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    block_size: int | None = None,
    skip_background: bool = False,
    shape: tuple[int, int] | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> LargeResult:
    """Segment ``image`` (H x W x C, C = 1 or 3, a lazy reader or an array) into ``path``.

    The output appears at ``path`` complete or not at all: the store is made in a
    hidden folder beside it and removed when anything fails (Ctrl-C included).
    blocks / mapper: where the blocks and the object passes run (default: here).
    progress(stage, done, total): stages ``blocks``, ``objects``, ``outlines``, ``levels``;
    with ``skip_background``, first ``background`` (tiles to run, tiles without skipping).
    block_size: the target side of a block and of a chunk of the store, px (default
    BLOCK_SIZE; SKIP_BLOCK_SIZE with ``skip_background``, so that blocks fit tissue closer).
    skip_background: predict only the blocks with tissue near them (app/pipeline/tissue.py);
    the others are class 0, without objects. The tissue is kept as the ``tissue`` label.
    shape: level 0's (h, w) when ``image`` is a level of it resampled to the model's pixel
    size (app/pipeline/resolution.py): the result is brought back to it.
    pixel_size: level 0's (row, column) pixel size in µm, when known: GeoJSON's objects
    then have their ``area_um2``.
    """
    card, (height, width) = model.card, image.shape[:2]
    (out_h, out_w) = shape or (height, width)
    block_size = block_size or (SKIP_BLOCK_SIZE if skip_background else BLOCK_SIZE)
    grid = block_grid(predictor.plan(height, width), block_size)
    recipe = objects_recipe(model, options) if output.content != "classes" else None
    scratch, found, runs = temporary_store(path), None, None
    back = temporary_store(path) if shape else None

    def stage(name: str) -> ProgressFn:
        return lambda done, total: progress(name, done, total) if progress else None

    try:
        store = _store(scratch, grid, output, recipe, len(card.classes), probability)
        if skip_background:
            runs = background(image, grid, predictor, options, store, stage)
        run = blocks or local_blocks(predictor, options)
        tiles = run(Pass(image, grid, store, recipe, runs), stage("blocks"))
        if recipe is not None:
            scale = (out_h / height, out_w / width)
            um2 = pixel_size[0] * pixel_size[1] if pixel_size else None
            found = _objects(store, grid, recipe, card, output, mapper, stage, runs, scale, um2)
        store.drop_scratch()
        store = bring_back(store, back, (out_h, out_w)) if back else store
        levels = _finish(store, path, output, model, stage)
    finally:
        for folder in (scratch, back):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    objects = found.count if found else None
    return LargeResult(out_h, out_w, tiles, levels, objects, skipped_area(grid, runs))


def _objects(
    store: LabelStore,
    grid: BlockGrid,
    recipe: Recipe,
    card: ModelCard,
    output: LargeOutput,
    mapper: Mapper,
    stage: Callable[[str], ProgressFn],
    runs: tuple[bool, ...] | None,
    scale: tuple[float, float],
    pixel_um2: float | None,
) -> Found:
    """The objects of the store's class map, and for ``outlines`` their GeoJSON (``scale``:
    level-0 pixels per pixel of the store; ``pixel_um2``: a level-0 pixel's area, if known)
    in the store's folder."""
    classes = len(card.classes)
    found = find_large_objects(store, grid, recipe, classes, mapper, stage("objects"), runs)
    if output.content == "outlines":
        target = store.path / OUTLINES
        write_geojson(
            store, grid, found, card.classes, target, mapper, stage("outlines"), scale, pixel_um2
        )
    return found


def _finish(
    store: LabelStore,
    path: Path,
    output: LargeOutput,
    model: Provenance,
    stage: Callable[[str], ProgressFn],
) -> int:
    """The pyramid, the metadata, the output in place; the number of levels."""
    card = model.card
    levels = store.build_levels(stage("levels")) if output.pyramid else 1
    facts = {"name": card.name, "version": card.version, "sha256": model.sha256}
    named = card.classes if output.content == "classes" else None
    store.describe(path.name, named, facts)
    output.finish(store, path)
    return levels


def skipped_area(grid: BlockGrid, runs: tuple[bool, ...] | None) -> float | None:
    """The fraction of the image in blocks that did not run (None: all were asked to)."""
    if runs is None:
        return None
    kept = sum(b.pixels for b, run in zip(grid, runs, strict=True) if run)
    return round(1 - kept / (grid.plan.height * grid.plan.width), 4)
