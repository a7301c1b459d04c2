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
(app/pipeline/dask.py) through ``Blocks`` (app/pipeline/blocks.py). With ``resume``, a
run stopped by anything goes on from its finished blocks (app/pipeline/resume.py).
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.codecs.outputs import LargeOutput, Options, Provenance
from app.codecs.outputs._objects import recipe as objects_recipe
from app.codecs.outputs.base import OUTLINES
from app.codecs.pyramid import LabelStore
from app.inference.blocks import BLOCK_SIZE, BlockGrid, block_grid
from app.inference.card import ModelCard, Recipe
from app.inference.predictor import Predictor
from app.inference.tiler import ProgressFn, Region
from app.pipeline.blocks import Blocks, Pass, local_blocks
from app.pipeline.geojson import write_geojson
from app.pipeline.objects import Found, Mapper, find_large_objects, local_map
from app.pipeline.resolution import bring_back
from app.pipeline.resume import Ledger, identity, run_key
from app.pipeline.tissue import background

# px: blocks when the background is skipped. Smaller blocks fit tissue closer: on a disc of
# tissue filling 25 % of a 16384² slide, the shipped model runs 352 of 900 tiles with
# blocks of 2304 px and 276 with 1152 px (bench.large slide).
SKIP_BLOCK_SIZE = 1024


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
    ledger: Ledger | None,
    grid: BlockGrid,
    output: LargeOutput,
    recipe: Recipe | None,
    num_classes: int,
    probability: bool,
) -> LabelStore:
    """The store for ``output``: its image, and the scratch arrays finding objects needs;
    the one a resumed run (``ledger``) left, when there is one."""
    if ledger is not None and ledger.resumed:
        return LabelStore.open(scratch)
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
    if ledger is not None:
        ledger.begin()
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
    resume: Path | None = None,
) -> LargeResult:
    """Segment ``image`` (H x W x C, C = 1 or 3, a lazy reader or an array) into ``path``.

    The output appears at ``path`` complete or not at all: its store is made in a hidden
    folder beside it, removed when anything fails -- or in ``resume`` with a ledger, kept:
    called again, the run goes on from its finished blocks (app/pipeline/resume.py).
    blocks / mapper: where the blocks and object passes run (default: here). progress
    (stage, done, total): ``blocks``, ``objects``, ``outlines``, ``levels``; first
    ``background`` (tiles to run, of all) with ``skip_background``, which predicts only
    blocks near tissue (app/pipeline/tissue.py; the others class 0, no objects; the tissue
    kept as the ``tissue`` label); ``resumed`` (tiles of the blocks done before, blocks).
    block_size: a block's and a chunk's side, px (BLOCK_SIZE; SKIP_BLOCK_SIZE when
    skipping background: blocks fit tissue closer). shape: level 0's (h, w) when ``image``
    is a level of it resampled to the model's pixel size: the result is brought back to
    it. pixel_size: level 0's (row, column) µm: GeoJSON's ``area_um2``.
    """
    card, (height, width) = model.card, image.shape[:2]
    block_size = block_size or (SKIP_BLOCK_SIZE if skip_background else BLOCK_SIZE)
    grid = block_grid(predictor.plan(height, width), block_size)
    recipe = objects_recipe(model, options) if output.content != "classes" else None
    facts = (output.name, grid, recipe, options, model.sha256, probability, skip_background)
    ledger = Ledger(resume, run_key(facts=facts, image=identity(image))) if resume else None
    scratch = ledger.store if ledger else temporary_store(path)
    back, count, runs = (temporary_store(path) if shape else None), None, None
    (out_h, out_w), stage = shape or (height, width), _stages(progress)
    try:
        store = _store(scratch, ledger, grid, output, recipe, len(card.classes), probability)
        if skip_background:
            runs = background(image, grid, predictor, options, store, stage)
        step = Pass(image, grid, store, recipe, runs, *_resumed(ledger, progress))
        tiles = (blocks or local_blocks(predictor, options))(step, stage("blocks"))
        if recipe is not None:
            scale = (out_h / height, out_w / width)
            objects = Objects(card, output, mapper, stage, runs, scale, pixel_size)
            count = objects.find(store, grid, recipe, ledger).count
        store.drop_scratch()
        store = bring_back(store, back, (out_h, out_w)) if back else store
        levels = _finish(store, path, output, model, stage, None if back else ledger)
    finally:
        _remove(None if ledger else scratch, back)
    if ledger is not None:
        ledger.close()
    return LargeResult(out_h, out_w, tiles, levels, count, skipped_area(grid, runs))


def _remove(*folders: Path | None) -> None:
    for folder in folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _stages(progress: Callable[[str, int, int], None] | None) -> Callable[[str], ProgressFn]:
    """stage(name): the progress function of that stage."""

    def stage(name: str) -> ProgressFn:
        return lambda done, total: progress(name, done, total) if progress else None

    return stage


def _resumed(
    ledger: Ledger | None, progress: Callable[[str, int, int], None] | None
) -> tuple[frozenset[int], Callable[[int, int], None] | None]:
    """(the blocks finished before, how to record one) for a Pass; ``resumed`` progress."""
    if ledger is None:
        return frozenset(), None
    if ledger.done and progress is not None:
        progress("resumed", sum(ledger.done.values()), len(ledger.done))
    return frozenset(ledger.done), ledger.finished


@dataclass(frozen=True)
class Objects:
    """How a run finds its objects: the card's classes, the output (GeoJSON when it is
    ``outlines``), where the passes run, the blocks that ran, and for the GeoJSON the
    level-0 pixels (rows, cols) per pixel of the store and level 0's pixel size (µm)."""

    card: ModelCard
    output: LargeOutput
    mapper: Mapper
    stage: Callable[[str], ProgressFn]
    runs: tuple[bool, ...] | None
    scale: tuple[float, float]
    pixel_size: tuple[float, float] | None

    def find(
        self, store: LabelStore, grid: BlockGrid, recipe: Recipe, ledger: Ledger | None
    ) -> Found:
        """The objects of the store's class map, and for ``outlines`` their GeoJSON in the
        store's folder; those a resumed run had found already."""
        if ledger is not None and ledger.found is not None:
            return ledger.found
        classes, stage = self.card.classes, self.stage
        found = find_large_objects(
            store, grid, recipe, len(classes), self.mapper, stage("objects"), self.runs
        )
        if self.output.content == "outlines":
            write_geojson(
                store, grid, found, classes, store.path / OUTLINES, self.mapper,
                stage("outlines"), self.scale,
                math.prod(self.pixel_size) if self.pixel_size else None,
            )  # fmt: skip
        if ledger is not None:
            ledger.objects(found)
        return found


def _finish(
    store: LabelStore,
    path: Path,
    output: LargeOutput,
    model: Provenance,
    stage: Callable[[str], ProgressFn],
    ledger: Ledger | None = None,
) -> int:
    """The pyramid, the metadata, the output in place; the number of levels. ledger: a
    resumable run's, whose store this is: levels a run before built are not built again."""
    card = model.card
    if not output.pyramid:
        levels = 1
    elif ledger is not None and ledger.levels:
        levels = ledger.levels
    else:
        levels = store.build_levels(stage("levels"))
        if ledger is not None:
            ledger.built(levels)
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
