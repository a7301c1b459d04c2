"""A segmentation on disk, beyond memory: chunked zarr arrays with a multiscale pyramid.

The store of the large-image path (DESIGN.md, "Data flow of a large image"): a
zarr v2 group, in the layout of an OME-NGFF 0.4 label image, that is the
``ome-zarr`` output as it stands and the source of the ``ome-tiff`` one.

    <store>/0, 1, 2, ...          class indices (uint8), level k = level 0 [::2^k, ::2^k]
    <store>/probability/0, 1, ... optional: round(p(class) * 65535) (uint16), same levels
    <store>/tissue/0              optional: where the tissue is (1) on a picture of the image
                                  (--skip-background), with its scale to level 0
    <store>/scratch/...           arrays while objects are found, removed before the end

Level 0 holds class indices (uint8) or, for object outputs, object ids (uint32).

Level 0 is written block by block (one writer per chunk: the chunks are the
blocks); ``build_levels`` then makes each level from the one before, chunk by
chunk, by nearest downsampling (every other pixel: labels stay labels, no new
values), so memory stays a few chunks whatever the image's size. Chunks are
Blosc/Zstandard-compressed, keys ``0/3/7`` ("/", as NGFF 0.4 asks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from app.codecs.encode import palette

COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
SMALLEST = 512  # px: levels are added until the largest side fits in this
BAND = 256  # rows of a level made at once (from 512 rows of the level above)
NGFF = "0.4"
AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _array(group: zarr.Group, name: str, shape: tuple[int, int], chunks: tuple[int, int],
           dtype: type) -> zarr.Array[Any]:  # fmt: skip
    return group.create_array(
        name,
        shape=shape,
        chunks=(min(chunks[0], shape[0]), min(chunks[1], shape[1])),
        dtype=dtype,
        compressors=COMPRESSOR,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
    )


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """(h, w) of each level: level k is ceil(h / 2^k) x ceil(w / 2^k), down to SMALLEST."""
    shapes = [(height, width)]
    while max(shapes[-1]) > SMALLEST:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Iterator[tuple[slice, slice]]:
    """The (rows, cols) of every chunk of a 2-d array, row-major."""
    rows = [slice(a, min(a + chunks[0], shape[0])) for a in range(0, shape[0], chunks[0])]
    cols = [slice(a, min(a + chunks[1], shape[1])) for a in range(0, shape[1], chunks[1])]
    return itertools.product(rows, cols)


class LabelStore:
    """The store at ``path`` (a folder, made anew): level 0 of the labels and, when asked,
    of the probability, ``height`` x ``width`` in chunks of ``chunks`` (rows, cols)."""

    def __init__(
        self,
        path: Path,
        height: int,
        width: int,
        chunks: tuple[int, int],
        probability: bool = False,
        dtype: type = np.uint8,
    ) -> None:
        self.path, self.chunks = path.absolute(), chunks  # absolute: workers elsewhere open it
        self.group = zarr.open_group(str(path), mode="w", zarr_format=2)
        self.labels = _array(self.group, "0", (height, width), chunks, dtype)
        self.probability: zarr.Array[Any] | None = None
        if probability:
            prob = self.group.create_group("probability")
            self.probability = _array(prob, "0", (height, width), chunks, np.uint16)

    @classmethod
    def open(cls, path: Path) -> LabelStore:
        """An existing store (a worker process writing its blocks into it)."""
        store = cls.__new__(cls)
        store.path, store.group = path, zarr.open_group(str(path), mode="r+", zarr_format=2)
        store.labels = store.group["0"]  # type: ignore[assignment]
        rows, cols = store.labels.chunks
        store.chunks = (int(rows), int(cols))
        store.probability = store.group["probability/0"] if "probability" in store.group else None  # type: ignore[assignment]
        return store

    def scratch(self, name: str, dtype: type | None = None) -> Any:
        """The scratch array ``scratch/<name>`` (the image's shape and chunks): made when a
        ``dtype`` is given, else opened. Removed with ``drop_scratch``."""
        if dtype is None:
            return self.group[f"scratch/{name}"]
        group = self.group.require_group("scratch")
        height, width = self.labels.shape
        return _array(group, name, (height, width), self.chunks, dtype)

    def has_scratch(self, name: str) -> bool:
        return f"scratch/{name}" in self.group

    @property
    def classes(self) -> Any:
        """Where the class map goes: the image itself, or ``scratch/classes`` when the image
        holds object ids."""
        return self.scratch("classes") if self.has_scratch("classes") else self.labels

    def drop_scratch(self) -> None:
        if "scratch" in self.group:
            del self.group["scratch"]

    def add_tissue(self, mask: Any, scale: tuple[float, float]) -> None:
        """The tissue mask (h x w; 1 = tissue) of a picture of the image, ``scale`` level-0
        pixels (rows, cols) per pixel: an NGFF label image of one level, ``tissue``."""
        if "tissue" in self.group:  # a resumed run's, found again
            del self.group["tissue"]
        group = self.group.create_group("tissue")
        _array(group, "0", mask.shape, mask.shape, np.uint8)[...] = mask.astype(np.uint8)
        transform: list[Any] = [{"type": "scale", "scale": [float(scale[0]), float(scale[1])]}]
        group.attrs["multiscales"] = [
            {"version": NGFF, "name": "tissue", "axes": AXES,
             "datasets": [{"path": "0", "coordinateTransformations": transform}]}
        ]  # fmt: skip
        group.attrs["image-label"] = {
            "version": NGFF,
            "colors": [
                {"label-value": 0, "rgba": [0, 0, 0, 0]},
                {"label-value": 1, "rgba": [0, 160, 0, 96]},
            ],
            "properties": [
                {"label-value": 0, "class": "glass"},
                {"label-value": 1, "class": "tissue"},
            ],
        }

    def groups(self) -> list[zarr.Group]:
        """The multiscale groups: the labels' (the root), then the probability's."""
        groups = [self.group]
        if self.probability is not None:
            groups.append(self.group["probability"])  # type: ignore[arg-type]
        return groups

    def build_levels(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Levels 1.. of every group from level 0, chunk by chunk; the number of levels."""
        shapes = level_shapes(*self.labels.shape)
        steps = [(g, k) for g in self.groups() for k in range(1, len(shapes))]
        total = sum(len(list(chunk_slices(shapes[k], self.chunks))) for _, k in steps)
        done = 0
        for group, k in steps:
            source: Any = group[str(k - 1)]
            target = _array(group, str(k), shapes[k], self.chunks, source.dtype)
            for rows, cols in chunk_slices(shapes[k], self.chunks):
                for top in range(rows.start, rows.stop, BAND):  # a few MB in memory at a time
                    band = slice(top, min(top + BAND, rows.stop))
                    source_rows = slice(2 * band.start, 2 * band.stop)
                    source_cols = slice(2 * cols.start, 2 * cols.stop)
                    target[band, cols] = source[source_rows, source_cols][::2, ::2]
                done += 1
                if progress is not None:
                    progress(done, total)
        return len(shapes)

    def levels(self, group: zarr.Group | None = None) -> list[Any]:
        """The arrays of the levels of ``group`` (default: the labels), level 0 first."""
        group = self.group if group is None else group
        count = len(level_shapes(*self.labels.shape))
        return [group[str(k)] for k in range(count) if str(k) in group]

    def describe(self, name: str, classes: list[str] | None, model: dict[str, str]) -> None:
        """Write the OME-NGFF 0.4 metadata: multiscales, and image-label with the class
        names and colours (``classes``; None: the values are object ids)."""
        for group in self.groups():
            count = len(self.levels(group))
            group.attrs["multiscales"] = [
                {
                    "version": NGFF,
                    "name": name if group is self.group else f"{name} probability",
                    "axes": AXES,
                    "datasets": [
                        {
                            "path": str(k),
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [2.0**k, 2.0**k]}
                            ],
                        }
                        for k in range(count)
                    ],
                    "type": "nearest",
                    "metadata": {"method": "every other pixel ([::2, ::2])", "model": model},
                }
            ]
        if classes is None:
            self.group.attrs["image-label"] = {"version": NGFF}
            return
        rgb = palette(len(classes))
        self.group.attrs["image-label"] = {
            "version": NGFF,
            "colors": [  # background transparent, each class its overlay colour
                {"label-value": k, "rgba": [*rgb[3 * k : 3 * k + 3], 255 if k else 0]}
                for k in range(len(classes))
            ],
            "properties": [{"label-value": k, "class": c} for k, c in enumerate(classes)],
        }
