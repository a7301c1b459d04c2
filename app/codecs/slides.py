"""Lazy region readers: images beyond memory, read one rectangle at a time.

A ``Slide`` is an H x W x C (C = 1 or 3) uint8/uint16 image that reads nothing
until a rectangle is asked for (``slide[rows, cols]``), which is all the tiler
needs (app/inference/tiler.py: ``Region``). The readers, tried in order:

- ``ome-zarr``: an OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3) image's level 0,
  or a bare zarr array, through ``zarr``;
- ``tiff``: tiled or stripped, pyramidal or not: TIFF, BigTIFF, OME-TIFF, SVS and
  the other TIFF-based slides, level 0 of the first series as a zarr store
  (``tifffile.aszarr``; ``imagecodecs`` decodes JPEG, JPEG 2000, LZW, Deflate tiles);
- ``dicom-wsi``: DICOM whole-slide images through ``wsidicom`` (app/codecs/dicom_wsi.py);
- ``openslide``: what else OpenSlide reads (NDPI, MRXS, SCN, VMS, BIF), through
  ``openslide-python`` with the ``openslide-bin`` wheel (no system library).

Channels as the in-memory decoders give them: gray, RGB; alpha dropped. A file
that is not one of these, or is broken, raises the codec errors ``/segment``
raises (NotAnImageError, UnsupportedFormatError, CorruptImageError) -- also
for a tile found broken only when it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.codecs.dicom_wsi import is_dicom_wsi, open_levels
from app.codecs.errors import CorruptImageError, NotAnImageError, UnsupportedFormatError
from app.codecs.magic import is_tiff
from app.codecs.openslide_levels import is_openslide, openslide_levels
from app.codecs.pixel_size import ngff_pixel_size_um, tifffile_pixel_size_um

SPATIAL = ("Y", "X")
LARGEST_CHUNK = 256 << 20  # bytes of one TIFF strip or tile: more is refused (not tiled)
CHANNELS = ("C", "S")  # tifffile: S = samples of a pixel (RGB), C = separate channels


class Slide:
    """A lazy H x W x C image over an array with named ``axes`` (tifffile's letters).

    array: anything with ``shape``, ``dtype`` and numpy indexing (a zarr array);
    path: the file or folder it reads (another process opens it again: Dask workers);
    axes: one letter per dimension, Y and X among them, C or S for channels;
    every other axis (T, Z, pages) must have length 1.
    lower: the file's own pyramid, level 1 onwards, as Slides (app/codecs/overview.py).
    pixel_size_um: level 0's (row, column) spacing as the file states it, else None.
    """

    pixel_size_um: tuple[float, float] | None = None
    level = 0  # its index in the file's pyramid

    def __init__(
        self,
        array: Any,
        axes: str,
        fmt: str,
        path: Path,
        close: Callable[[], None] = lambda: None,
        lower: tuple[Slide, ...] = (),
    ) -> None:
        name = path.name
        axes = axes.upper()
        if not set(SPATIAL) <= set(axes) or len(axes) != len(array.shape):
            raise UnsupportedFormatError(f"{name}: cannot find Y and X among the axes {axes!r}")
        if np.dtype(array.dtype) not in (np.uint8, np.uint16):
            raise UnsupportedFormatError(
                f"{name}: pixels are {array.dtype}; send 8- or 16-bit unsigned images"
            )
        sizes = dict(zip(axes, array.shape, strict=True))
        extra = {a: n for a, n in sizes.items() if a not in SPATIAL + CHANNELS and n > 1}
        channel_axes = [a for a in axes if a in CHANNELS]
        channels = int(np.prod([sizes[a] for a in channel_axes]))
        if extra or len(channel_axes) > 1 or channels > 4:
            raise UnsupportedFormatError(
                f"{name}: a large image is one plane of 1-4 channels; this one has "
                f"axes {axes} of sizes {tuple(array.shape)}: split it into planes"
            )
        self.format, self.path, self.name, self._close = fmt, path, name, close
        self.lower = lower
        for index, below in enumerate(lower, start=1):
            below.level = index
        self._array, self._axes = array, axes
        self._channel = channel_axes[0] if channel_axes else None
        kept = 1 if channels <= 2 else 3  # gray (+ alpha), RGB (+ alpha): alpha dropped
        self.shape: tuple[int, int, int] = (int(sizes["Y"]), int(sizes["X"]), kept)
        self.dtype = np.dtype(array.dtype)
        if 0 in self.shape:
            raise CorruptImageError(
                f"{name}: the image is empty ({self.shape[1]} x {self.shape[0]})"
            )

    def __getitem__(self, key: tuple[slice, slice]) -> npt.NDArray[Any]:
        """The pixels of ``[rows, cols]`` (slices with steps of 1) as h x w x C."""
        rows, cols = key
        parts = {"Y": rows, "X": cols}
        if self._channel is not None:
            parts[self._channel] = slice(0, self.shape[2])
        index = tuple(parts.get(a, 0) for a in self._axes)
        try:
            block = np.asarray(self._array[index])
        except MemoryError:
            raise
        except Exception as exc:  # a tile's bytes: truncated, corrupt, unknown codec
            raise CorruptImageError(
                f"{self.name}: the region rows {rows.start}-{rows.stop}, columns "
                f"{cols.start}-{cols.stop} cannot be read ({type(exc).__name__}: {exc})"
            ) from exc
        order = [a for a in self._axes if a in parts]
        wanted = ["Y", "X"] + ([self._channel] if self._channel else [])
        block = block.transpose([order.index(a) for a in wanted])
        return block if self._channel else block[:, :, None]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))


def _ngff_axes(attrs: dict[str, Any]) -> tuple[list[str], str, dict[str, Any]] | None:
    """(the levels' paths, level 0 first; their axes letters; the multiscale) of an NGFF
    image's attributes, or None."""
    ome = attrs.get("ome", attrs)  # 0.5 nests the metadata under "ome"
    multiscales = ome.get("multiscales")
    if not multiscales:
        return None
    first = multiscales[0]
    axes = first.get("axes") or ["t", "c", "z", "y", "x"][-5:]
    names = [a["name"] if isinstance(a, dict) else a for a in axes]
    paths = [d["path"] for d in first["datasets"]]
    return paths, "".join(n[0].upper() for n in names), first


def _open_zarr(path: Path) -> Slide:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Array):  # a bare array: YX, YXS (<= 4 samples) or CYX
            shape = node.shape
            guess = {2: "YX", 3: "YXS" if shape[-1] <= 4 else "CYX"}.get(len(shape), "")
            return Slide(node, guess, "zarr", path)
        found = _ngff_axes(dict(node.attrs))
        if found is None:
            raise UnsupportedFormatError(
                f"{path.name}: a zarr group without OME-NGFF 'multiscales' metadata; give the "
                "path of an OME-Zarr image or of one zarr array"
            )
        levels, axes, multiscale = found
        lower = tuple(Slide(node[k], axes, "ome-zarr", path) for k in levels[1:])
        slide = Slide(node[levels[0]], axes, "ome-zarr", path, lower=lower)
        slide.pixel_size_um = ngff_pixel_size_um(multiscale)
        return slide
    except (UnsupportedFormatError, CorruptImageError):
        raise
    except Exception as exc:  # metadata that is not what NGFF says: a missing level, ...
        raise CorruptImageError(f"{path.name}: not a readable OME-Zarr ({exc!r})") from exc


def _open_tiff(path: Path) -> Slide:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError) as exc:
        raise CorruptImageError(f"{path.name}: not a readable TIFF ({exc})") from exc
    try:
        series = tif.series[0]
        array: Any = zarr.open(series.aszarr(level=0), mode="r")
        chunk = int(np.prod(array.chunks)) * array.dtype.itemsize
        if chunk > LARGEST_CHUNK:  # a strip or tile this big is read whole for every block
            raise UnsupportedFormatError(
                f"{path.name}: its strips or tiles hold {chunk >> 20} MiB each, too much to read "
                "a region at a time; convert it to a tiled TIFF (e.g. vips tiffsave --tile, or "
                "tifffile's tile=)"
            )
        lower = tuple(
            Slide(zarr.open(series.aszarr(level=k), mode="r"), series.axes, "tiff", path)
            for k in range(1, len(series.levels))
        )
        slide = Slide(array, series.axes, "tiff", path, tif.close, lower)
        slide.pixel_size_um = tifffile_pixel_size_um(series.keyframe)
        return slide
    except (UnsupportedFormatError, CorruptImageError):
        tif.close()
        raise
    except Exception as exc:  # tifffile's view of a damaged file: IndexError, KeyError, ...
        tif.close()
        raise CorruptImageError(f"{path.name}: not a readable TIFF ({exc})") from exc


def _of_levels(
    levels: Sequence[Any], fmt: str, path: Path, close: Callable[[], None], size: Any
) -> Slide:
    """The Slide of a file's RGB levels (level 0 first); the file closed if one is refused."""
    try:
        lower = tuple(Slide(level, "YXS", fmt, path) for level in levels[1:])
        slide = Slide(levels[0], "YXS", fmt, path, close, lower)
    except BaseException:
        close()
        raise
    slide.pixel_size_um = size
    return slide


def _open_openslide(path: Path) -> Slide:
    levels, close, pixel_size = openslide_levels(path)
    return _of_levels(levels, "openslide", path, close, pixel_size)


def is_tiff_file(path: Path) -> bool:
    """A file that starts like a TIFF (SVS, OME-TIFF, BigTIFF included)."""
    if not path.is_file():
        return False
    with path.open("rb") as file:
        return is_tiff(file.read(8))


@dataclass(frozen=True)
class Reader:
    """name: for messages; matches(path); open(path) -> Slide."""

    name: str
    matches: Callable[[Path], bool]
    open: Callable[[Path], Slide]


def _open_dicom_wsi(path: Path) -> Slide:
    levels, close = open_levels(path)
    return _of_levels(levels, "dicom-wsi", path, close, levels[0].pixel_size_um)


# Tried in this order: TIFF-based slides (SVS too) go to tifffile before OpenSlide.
READERS = (
    Reader("OME-Zarr", _is_zarr, _open_zarr),
    Reader("DICOM WSI", is_dicom_wsi, _open_dicom_wsi),
    Reader("TIFF", lambda p: is_tiff_file(p), _open_tiff),
    Reader("OpenSlide", is_openslide, _open_openslide),
)


def lazy_readable(path: Path) -> bool:
    """Whether a reader here takes ``path`` (a zarr folder, a TIFF, an OpenSlide file)."""
    return any(reader.matches(path) for reader in READERS)


def open_slide(path: str | Path) -> Slide:
    """The lazy image at ``path`` (close it, or use it as a context manager)."""
    path = Path(path)
    for reader in READERS:
        if reader.matches(path):
            return reader.open(path)
    names = ", ".join(r.name for r in READERS)
    raise NotAnImageError(f"{path.name}: not a large-image format read here ({names})")
