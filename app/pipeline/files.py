"""Files of the command line and of jobs: which inputs a folder or glob names, where
outputs go, and writing them so that none is ever seen half-written."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from app.codecs.images import BASE_FORMATS
from app.codecs.slides import lazy_readable

# Files a folder contributes (by name; their content is recognised by magic number),
# and the folders that are one input each (a zarr array, an OME-Zarr image, a DICOM WSI).
IMAGE_SUFFIXES = {suffix for f in BASE_FORMATS for suffix in f.suffixes}  # the registry's
SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".zarr"}
# Taken off an input's name with its extension: x.ome.tif -> x -> x.ome.zarr, not x.ome.ome.zarr.
DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".ome.btf")


NOTHING = "no such file, no image in that folder, or a glob that matches none"


def _one_input(path: Path) -> bool:
    """A folder that is itself an image (zarr, DICOM WSI), or a file."""
    return path.is_file() or (path.is_dir() and lazy_readable(path))


def expand(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and globs -> (the inputs, each once; the
    arguments that named none: no such file, a folder without images, a glob that
    matches nothing)."""
    suffixes = IMAGE_SUFFIXES | SLIDE_SUFFIXES
    found: list[Path] = []
    empty: list[str] = []
    for given in inputs:
        path = Path(given)
        if _one_input(path):
            named = [path]
        elif path.is_dir():
            named = sorted(  # a folder in it only when it is an image (zarr, DICOM WSI)
                p for p in path.iterdir()
                if (p.suffix.lower() in suffixes or p.is_dir()) and _one_input(p)
            )  # fmt: skip
        else:
            named = sorted(Path(p) for p in glob.glob(given, recursive=True) if _one_input(Path(p)))
        found += named
        if not named:
            empty.append(given)
    unique = dict.fromkeys(p.resolve() for p in found)
    return list(unique), empty


def stem(source: Path) -> str:
    """The input's name without its extension (``.ome.tif`` and ``.ome.zarr`` as one)."""
    name = source.name
    lowered = name.lower()
    for suffix in DOUBLE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return source.stem


def target(folder: Path, source: Path, extension: str, media_type: str | None = None) -> Path:
    """``folder/<stem>.<ext>``; an instance image past 65535 objects is a TIFF."""
    if media_type == "image/tiff" and extension.endswith(".png"):
        extension = extension[: -len(".png")] + ".tif"
    return folder / f"{stem(source)}.{extension}"


def claim(claimed: dict[Path, Path], output: Path, source: Path) -> None:
    """Record ``output`` as ``source``'s; ValueError when it is the input itself, or another
    input's output already (outputs are named by the input's name alone: a/x.png and b/x.png)."""
    if output.resolve() == source.resolve():
        raise ValueError(f"the output would replace the input {source}: use another --out")
    first = claimed.setdefault(output, source)
    if first != source:
        raise ValueError(
            f"its output {output.name} is that of {first} too: segment inputs of the same "
            "name into different --out folders"
        )


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary file beside ``path``, renamed over it: never a half-written ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def set_aside(path: Path) -> Path:
    """Rename an output to be redone (``--overwrite``) to a hidden name beside it; the
    caller removes it once the new output is in place, or renames it back."""
    aside = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
    os.replace(path, aside)
    return aside


def remove(path: Path) -> None:
    """An output to be redone (``--overwrite``): a file or a folder (OME-Zarr)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
