"""Where a large image stopped, so that it goes on from there (a job after a restart or a
``kill -9`` of the service, app/jobs/runner.py).

A resumable run keeps its store in a folder of its own, ``<folder>/store``, with a ledger
beside it:

- ``key``: what the run makes (the tile plan, blocks and chunks, the output and its
  options, the model's SHA-256, this boot of the machine), written once the store is
  made. A folder of another key is thrown away with its store: the run starts afresh.
- ``blocks``: a line ``<block index> <tiles>`` appended once a block's chunks are written.
  A block written but not recorded when the process died simply runs again; one
  recorded is never run again. Chunks and lines are not fsynced: a kill loses nothing
  the kernel holds, and the key's boot id makes a run interrupted by a crash of the
  machine (which may lose either) start afresh.
- ``objects.npy``: the objects found, once every object pass has finished (their
  GeoJSON is in the store by then); the passes run again only without it.
- ``levels``: the number of pyramid levels, once they are built in the store (a run
  resampled to the model's pixel size builds them in another store: again).

The result is the one an uninterrupted run writes, bit for bit: a block is a pure
function of the image, and each object pass reads only what the passes before it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from app.pipeline.objects import Found

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot of the machine (Linux); "" elsewhere (then a crash is not told apart)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def identity(image: Any) -> tuple[Any, ...]:
    """What tells ``image`` from another: a file's path, size and time of change (a level
    of it, resampled: which, and to what); an array's shape and the hash of its bytes."""
    inner = getattr(image, "image", None)  # a Resampled level
    if inner is not None and hasattr(image, "factors"):
        return (*identity(inner), getattr(inner, "level", 0), tuple(image.shape))
    path = getattr(image, "path", None)
    if path is not None:
        stat = Path(path).stat()
        return str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns, tuple(image.shape)
    array = np.ascontiguousarray(image)
    return array.shape, str(array.dtype), hashlib.blake2b(array.data, digest_size=16).hexdigest()


def run_key(**facts: Any) -> str:
    """The key of a run: a hash of everything its result depends on (``repr`` of each)."""
    text = json.dumps({k: repr(v) for k, v in sorted(facts.items())} | {"boot": boot_id()})
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """The ledger of a resumable run in ``folder`` for ``key``: what a run before this one
    finished (``done``: block index -> tiles; ``found``: the objects), if its key was this."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = folder, key
        self.store = folder / "store"
        self.done: dict[int, int] = {}
        self.found: Found | None = None
        self.levels = 0
        self.resumed = _read(folder / "key") == key and self.store.is_dir()
        if self.resumed:
            self.done = _blocks(folder / "blocks")
            self.found = _found(folder)
            self.levels = int(_read(folder / "levels") or 0)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def begin(self) -> None:
        """The store is made: from now on this run can be resumed."""
        _write(self.folder / "key", self.key)

    def finished(self, index: int, tiles: int) -> None:
        """Block ``index`` (its chunks written, ``tiles`` run) is done."""
        with (self.folder / "blocks").open("a") as out:
            out.write(f"{index} {tiles}\n")
        self.done[index] = tiles

    def objects(self, found: Found) -> None:
        """Every object pass has finished."""
        np.save(self.folder / "objects.part.npy", found.classes)
        os.replace(self.folder / "objects.part.npy", self.folder / "objects.npy")
        self.found = found

    def built(self, levels: int) -> None:
        """The store's pyramid levels are built."""
        _write(self.folder / "levels", str(levels))
        self.levels = levels

    def close(self) -> None:
        """The run's output is in place: nothing is left to resume."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def _blocks(path: Path) -> dict[int, int]:
    """The blocks recorded: whole lines only (the last, cut short by a kill, is not one)."""
    done: dict[int, int] = {}
    for line in (_read(path) or "").split("\n")[:-1]:
        fields = line.split()
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            done[int(fields[0])] = int(fields[1])
    return done


def _found(folder: Path) -> Found | None:
    try:
        classes = np.load(folder / "objects.npy")
    except (OSError, ValueError):
        return None
    return Found(len(classes) - 1, classes.astype(np.int64))
