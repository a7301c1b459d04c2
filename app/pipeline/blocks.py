"""The block pass of a large image: each block of the tile plan predicted and written into
the chunk of the store that is exactly that block (app/pipeline/large.py runs it).

``write_block`` is one block; ``Pass`` the blocks of one image (those the background
and a resumed run leave); ``Blocks`` what runs a pass: ``local_blocks`` here, one block
after another, or a Dask cluster's (app/pipeline/dask.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.codecs.encode import to_uint16
from app.codecs.outputs import Options
from app.codecs.pyramid import LabelStore
from app.inference.blocks import Block, BlockGrid
from app.inference.card import Recipe
from app.inference.objects import class_probability, watershed_inputs
from app.inference.predictor import Predictor
from app.inference.tiler import ProgressFn, Region


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
    blocks, in the grid's order (None: all; the others are background, class 0);
    ``finished``: blocks a run before this one wrote (resumed: not run again);
    ``record(index, tiles)``: told of each block once it is written."""

    image: Region
    grid: BlockGrid
    store: LabelStore
    recipe: Recipe | None
    runs: tuple[bool, ...] | None = None
    finished: frozenset[int] = frozenset()
    record: Callable[[int, int], None] | None = None

    def blocks(self) -> list[Block]:
        """The blocks that are predicted now."""
        runs = self.runs or (True,) * len(self.grid)
        return [
            block
            for index, (block, run) in enumerate(zip(self.grid, runs, strict=True))
            if run and index not in self.finished
        ]

    def written(self, block: Block, tiles: int) -> None:
        """``block`` is in the store (``tiles`` run for it)."""
        if self.record is not None:
            self.record(self.grid.index(block), tiles)


# Runs a Pass (``progress(blocks done, total)``); the number of tiles run.
Blocks = Callable[[Pass, ProgressFn], int]


def local_blocks(predictor: Predictor, options: Options, tiles: ProgressFn | None = None) -> Blocks:
    """The blocks one after another in this process; ``tiles``: each block's tile progress."""

    def run(step: Pass, progress: ProgressFn) -> int:
        count, blocks = 0, step.blocks()
        for done, block in enumerate(blocks, start=1):
            ran = write_block(
                predictor, step.image, step.grid, block, options, step.store, step.recipe, tiles
            )
            step.written(block, ran)
            count += ran
            progress(done, len(blocks))
        return count

    return run
