"""Files that survive a crash or a power loss: written, fsynced, renamed, their folder
fsynced (the gateway's store)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a new file at ``path`` and fsync it (its name is not yet durable)."""
    with path.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_durably(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` a temporary file beside ``path``, fsync it, rename it into place."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        write_synced(partial, write)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def writer(data: bytes) -> Callable[[BinaryIO], object]:
    return lambda f: f.write(data)
