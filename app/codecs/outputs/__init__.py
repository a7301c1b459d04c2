"""Output formats: one module per format, one registry (``Outputs``) built per app.

A new format is one module with an ``OUTPUT`` and one line below; the OpenAPI
enum of ``format`` and every message naming formats come from the registry.
"""

from __future__ import annotations

import importlib.util

from app.codecs.outputs import (
    geojson,
    instances,
    objects,
    ome_tiff,
    ome_zarr,
    overlay,
    png,
    probability,
    rle,
)
from app.codecs.outputs.base import Encoder, LargeOutput, Options, Output, Outputs, Provenance

__all__ = [
    "LARGE_OUTPUTS",
    "Encoder",
    "LargeOutput",
    "Options",
    "Output",
    "Outputs",
    "Provenance",
    "default_outputs",
    "every_format",
]

# The formats of images beyond memory, written from the store on disk (app/codecs/pyramid.py).
# ``instances`` and ``geojson`` are also in-memory formats: an image above the size limit
# gets these.
LARGE_OUTPUTS = {
    o.name: o for o in (ome_zarr.OUTPUT, ome_tiff.OUTPUT, ome_zarr.INSTANCES, geojson.LARGE)
}


def every_format(outputs: Outputs) -> list[str]:
    """The names a batch or a job may ask for: ``outputs``' in-memory formats, then the
    large ones (a name in both once)."""
    return list(dict.fromkeys([*outputs.names(), *LARGE_OUTPUTS]))


def default_outputs() -> Outputs:
    """The formats this installation writes, in the order messages list them."""
    registry = Outputs(
        [
            png.OUTPUT,
            rle.OUTPUT,
            probability.OUTPUT,
            overlay.OUTPUT,
            instances.OUTPUT,
            objects.OUTPUT,
            geojson.OUTPUT,
        ]
    )
    if importlib.util.find_spec("highdicom") is not None:  # the `dicom` extra
        from app.codecs.outputs import dicom_seg, dicom_sr

        registry.add(dicom_seg.OUTPUT)
        registry.add(dicom_sr.OUTPUT)
    return registry
