"""A folder result (an OME-Zarr store) as a zip made on the fly, never on disk.

The zip holds the store's files at its root (``.zattrs``, ``0/.zarray``, ...),
so ``zarr.storage.ZipStore`` and ``ome-zarr`` open the downloaded file as it is.
Chunks are stored, not deflated again (they are compressed already); ZIP64
entries, so stores and chunks past 4 GiB stay readable.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

PIECE = 1 << 20  # bytes read from a chunk file at a time


class _Pipe:
    """A write-only, unseekable file whose bytes are taken out as they are written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_folder(folder: Path) -> Iterator[bytes]:
    """The bytes of a zip of every file under ``folder`` (paths relative to it, sorted)."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo.from_file(path, path.relative_to(folder).as_posix())
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as entry:
                while piece := source.read(PIECE):
                    entry.write(piece)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()
