"""The same blocks and images on a Dask distributed cluster (``unet-segment --dask ADDRESS``).

A large image's blocks (app/inference/blocks.py) become one task each; a task
predicts its block and writes it straight into the output store, whose chunks
are the blocks: one writer per chunk, nothing sent back but a tile count. The
small images of a batch become one task each and come back as the bytes the
in-process pipeline would write. Either way the result is identical to a run
without Dask (tests/pipeline/test_large.py proves it on a LocalCluster).

Each worker process loads the model once per batch setup (``Setup``, which names the
model file; its SHA-256 is checked against the client's) and reuses it for every task;
a slide is opened once per worker by its path. So the input files, the model and
the output folder must be at the same paths on every worker: a shared file
system (NFS, a Kubernetes volume) on a real cluster.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.codecs.outputs import default_outputs
from app.codecs.pyramid import LabelStore
from app.codecs.slides import Slide, open_slide
from app.inference import ModelLoadError
from app.inference.blocks import Block, BlockGrid
from app.inference.card import Recipe
from app.inference.resample import Resampled
from app.inference.tiler import ProgressFn
from app.pipeline.batch import Small
from app.pipeline.blocks import Pass, write_block
from app.pipeline.context import Context, Setup

SCATTER_BYTES = 1 << 20  # arrays at least this big go to the workers once, not with each task
STOP_WAIT_S = 600  # the longest a failed or interrupted run waits for its running tasks


@functools.lru_cache(maxsize=2)
def _context(setup: Setup, sha256: str) -> Context:
    """This worker's model and predictor for ``setup``, loaded at its first task."""
    context = Context.load(setup)
    if context.model.sha256 != sha256:
        raise ModelLoadError(
            f"{setup.model} on this worker is not the client's model (SHA-256 "
            f"{context.model.sha256[:12]} here, {sha256[:12]} there)"
        )
    return context


_SLIDES: dict[str, tuple[tuple[int, int], Slide]] = {}


def _slide(path: str) -> Slide:
    """The slide at ``path``, opened once per worker while the file stays the same."""
    stat = Path(path).stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _SLIDES.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    if cached is not None:
        cached[1].close()
    while len(_SLIDES) >= 4:
        _SLIDES.pop(next(iter(_SLIDES)))[1].close()
    _SLIDES[path] = (version, open_slide(path))
    return _SLIDES[path][1]


def _image(source: str | tuple[str, int, tuple[int, int]] | np.ndarray) -> Any:
    """A block task's image: a slide by its path; a level of one at the model's pixel
    size, by (path, level, shape); or the array itself."""
    if isinstance(source, str):
        return _slide(source)
    if isinstance(source, tuple):
        path, level, shape = source
        slide = _slide(path)
        return Resampled(slide.lower[level - 1] if level else slide, shape)
    return source


def _block_task(
    setup: Setup,
    sha256: str,
    source: str | tuple[str, int, tuple[int, int]] | np.ndarray,
    grid: BlockGrid,
    block: Block,
    store: str,
    recipe: Recipe | None,
) -> int:
    context = _context(setup, sha256)
    image = _image(source)
    target = LabelStore.open(Path(store))
    return write_block(context.predictor, image, grid, block, context.options, target, recipe)


def _small_task(setup: Setup, sha256: str, source: str, output: str) -> Any:
    return Small(_context(setup, sha256), default_outputs(), output)(Path(source))


def _executing(dask_worker: Any) -> list[Any]:
    """The keys of the tasks a worker is running now (cancelled ones too)."""
    return [task.key for task in dask_worker.state.executing]


def connect(address: str, timeout_s: float = 30) -> Any:
    """A client of the Dask scheduler at ``address``; OSError when it cannot be reached."""
    from distributed import Client

    return Client(address, timeout=f"{timeout_s}s")


class Cluster:
    """A client of the Dask scheduler at ``address`` (or an open ``client``) for one batch
    run, or one job, with ``setup``. on_tiles(n): told of the tiles of each finished block."""

    def __init__(
        self,
        address: str | None,
        setup: Setup,
        sha256: str,
        client: Any = None,
        on_tiles: Callable[[int], None] | None = None,
    ) -> None:
        self.owns = client is None  # closed with this Cluster, else its owner's
        self.client = client if client is not None else connect(address or "")
        self.setup, self.sha256, self.on_tiles = setup, sha256, on_tiles
        self._small: dict[Path, Any] = {}

    def start(self, inputs: Iterable[tuple[Path, str]]) -> None:
        """Submit every in-memory input of the batch now (``(path, format)``), so that
        the workers share them out; ``small`` then waits for one's answer."""
        for source, output in inputs:
            self._small[source] = self.client.submit(
                _small_task, self.setup, self.sha256, str(source), output, pure=False
            )

    def small(self, source: Path, output: str, bar: object = None) -> Any:
        """(body, media type, facts) of a small input, as ``Small`` gives them."""
        future = self._small.pop(source, None)
        if future is None:
            future = self.client.submit(
                _small_task, self.setup, self.sha256, str(source), output, pure=False
            )
        return future.result()

    def blocks(self, step: Pass, progress: ProgressFn) -> int:
        """Every block of the pass that runs as a task writing into its store; the tiles run."""
        from distributed import as_completed

        image = step.image
        source: Any = str(image.path) if isinstance(image, Slide) else None
        if isinstance(image, Resampled) and isinstance(image.image, Slide):
            source = (str(image.image.path), image.image.level, image.shape[:2])
        if source is None:  # an image decoded in memory: sent to the workers once
            whole = image[slice(0, image.shape[0]), slice(0, image.shape[1])]
            source = self.client.scatter(np.asarray(whole), broadcast=True)
        where, setup, sha = str(step.store.path), self.setup, self.sha256
        blocks = step.blocks()
        futures = [
            self.client.submit(
                _block_task, setup, sha, source, step.grid, b, where, step.recipe, pure=False
            )
            for b in blocks
        ]
        block_of = {f.key: b for f, b in zip(futures, blocks, strict=True)}
        tiles = 0
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                ran = future.result()
                step.written(block_of[future.key], ran)
                tiles += ran
                if self.on_tiles is not None:
                    self.on_tiles(ran)
                progress(done, len(futures))
        finally:
            self._stop(futures)
        return tiles

    def _stop(self, futures: list[Any]) -> None:
        """Cancel what is left and wait until none of it runs any more (a running task
        cannot be stopped: it would write into a store being removed)."""
        self.client.cancel(futures)
        keys = {f.key for f in futures}
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            # A worker that died meanwhile runs nothing: ignored (its tasks went elsewhere).
            answers = self.client.run(_executing, on_error="ignore").values()
            running = {k for tasks in answers for k in tasks}
            if not running & keys:
                return
            time.sleep(0.2)

    def map(self, task: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> Iterator[Any]:
        """``task(*args)`` for each of ``jobs`` as tasks; the results in the jobs' order.
        Arrays among the arguments go to the workers once, not with every task."""
        sent: dict[int, Any] = {}

        def once(value: Any) -> Any:
            if isinstance(value, tuple):
                return tuple(once(v) for v in value)
            if not isinstance(value, np.ndarray) or value.nbytes < SCATTER_BYTES:
                return value
            if id(value) not in sent:
                sent[id(value)] = self.client.scatter(value, broadcast=True)
            return sent[id(value)]

        futures = [self.client.submit(task, *map(once, args), pure=False) for args in jobs]
        try:
            for future in futures:
                yield future.result()
        finally:
            self._stop(futures)

    def close(self) -> None:
        self.client.cancel(list(self._small.values()))
        if self.owns:
            self.client.close()
