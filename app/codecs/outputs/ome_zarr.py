"""``format=ome-zarr``: the class map as an OME-NGFF 0.4 label image with its pyramid.

The large-image store (app/codecs/pyramid.py) is already that image: finishing
it is renaming its folder into place. Readable by ``ome-zarr``, zarr and napari;
label values are the class indices, ``image-label`` names and colours them.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.codecs.outputs.base import LargeOutput
from app.codecs.pyramid import LabelStore


def finish(store: LabelStore, path: Path) -> None:
    os.replace(store.path, path)


OUTPUT = LargeOutput(
    "ome-zarr",
    "the class map as an OME-NGFF label image (zarr v2, multiscale), for images of any size",
    finish,
    extension="ome.zarr",
)
