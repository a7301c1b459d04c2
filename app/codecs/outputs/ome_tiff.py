"""``format=ome-tiff``: the class map as a tiled, pyramidal OME-TIFF (BigTIFF, sub-IFDs).

Written tile by tile from the large-image store (app/codecs/pyramid.py), one
band of 512 rows in memory at a time: level 0 as the main image, levels 1..
as its sub-IFDs (the OME-TIFF pyramid convention), Deflate-compressed 512 x 512
tiles. Readable by tifffile, Bio-Formats and QuPath; pixel values are the class
indices.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from app.codecs.outputs.base import LargeOutput
from app.codecs.pyramid import LabelStore

TILE = 512


def _tiles(level: Any) -> Iterator[np.ndarray]:
    """The level's TILE x TILE tiles, row-major (partial ones at the right and bottom)."""
    height, width = level.shape
    for top in range(0, height, TILE):
        band = np.asarray(level[top : top + TILE, :])
        for left in range(0, width, TILE):
            yield band[:, left : left + TILE]


def finish(store: LabelStore, path: Path) -> None:
    levels = store.levels()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        with tifffile.TiffWriter(temporary, bigtiff=True, ome=True) as tif:
            for k, level in enumerate(levels):
                tif.write(
                    _tiles(level),
                    shape=level.shape,
                    dtype=level.dtype,
                    tile=(TILE, TILE),
                    compression="zlib",
                    **(
                        {"subifds": len(levels) - 1, "metadata": {"axes": "YX", "Name": path.name}}
                        if k == 0
                        else {"subfiletype": 1}
                    ),
                )
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    shutil.rmtree(store.path)


OUTPUT = LargeOutput(
    "ome-tiff",
    "the class map as a tiled pyramidal OME-TIFF (BigTIFF, sub-IFDs), for images of any size",
    finish,
    extension="ome.tif",
    media_type="image/tiff",
)
