"""``format=ome-zarr``: the class map as an OME-NGFF 0.4 label image with its pyramid.

The large-image store (app/codecs/pyramid.py) is already that image: finishing
it is renaming its folder into place. ``instances`` of a large image is the same,
with object ids (uint32) for values. Readable by ``ome-zarr``, zarr and napari;
label values are the class indices, ``image-label`` names and colours them.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.codecs.outputs.base import LargeOutput
from app.codecs.pyramid import LabelStore


def finish(store: LabelStore, path: Path) -> None:
    os.replace(store.path, path)


INSTANCES = LargeOutput(
    "instances",
    "object ids (uint32) as an OME-NGFF label image with its pyramid, for large images",
    finish,
    extension="instances.ome.zarr",
    content="objects",
)
OUTPUT = LargeOutput(
    "ome-zarr",
    "the class map as an OME-NGFF label image (zarr v2, multiscale), for images of any size",
    finish,
    extension="ome.zarr",
)
