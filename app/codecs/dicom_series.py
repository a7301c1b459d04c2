"""Several DICOM instances of one series -> one image of frames in slice order.

A modality sends a CT as a series of single-frame instances; segmented
together they make ONE DICOM SEG for the series (API.md, "A series in, one SEG
out"). The instances must be one consistent series: the same Series Instance
UID, frame of reference, orientation, pixel spacing and size, each with a
position; else DicomSeriesError (422) naming what differs -- never an attribute
value. Frames are ordered by their position along the slice normal (the cross
product of the orientation's row and column directions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from app.codecs.errors import DicomSeriesError
from app.codecs.frames import DecodedImage

TOLERANCE = 1e-3  # direction cosines, mm


@dataclass(frozen=True)
class Series:
    """The source of a series image: the instances' datasets, one per frame, in slice order."""

    datasets: list[Dataset]


def _values(ds: Dataset, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    try:
        return [float(v) for v in value] if value is not None else None
    except (TypeError, ValueError):
        return None


def _check(images: Sequence[DecodedImage]) -> list[Dataset]:
    datasets = []
    for image in images:
        if not isinstance(image.source, Dataset) or len(image.frames) != 1:
            raise DicomSeriesError(
                "several files in one request must be single-frame DICOM instances of one "
                "series; send other images (or a multi-frame instance) one per request"
            )
        datasets.append(image.source)
    first = datasets[0]
    checks = {
        "series (Series Instance UID)": ("SeriesInstanceUID",),
        "frame of reference": ("FrameOfReferenceUID",),
        "image size (Rows, Columns)": ("Rows", "Columns"),
    }
    for what, keywords in checks.items():
        key = [str(first.get(k, "")) for k in keywords]
        if any([str(d.get(k, "")) for k in keywords] != key for d in datasets[1:]):
            raise DicomSeriesError(f"the instances differ in their {what}: send one series")
    for keyword, what in (
        ("ImageOrientationPatient", "orientation"),
        ("PixelSpacing", "pixel spacing"),
    ):
        reference = _values(first, keyword)
        for d in datasets:
            values = _values(d, keyword)
            if values is None or reference is None or len(values) != len(reference):
                raise DicomSeriesError(f"an instance has no usable {keyword}: a series needs it")
            if np.abs(np.subtract(values, reference)).max() > TOLERANCE:
                raise DicomSeriesError(f"the instances differ in their {what}: send one series")
    return datasets


def assemble(images: Sequence[DecodedImage]) -> DecodedImage:
    """One DecodedImage of the series: its frames in slice order, ``source`` a Series."""
    datasets = _check(images)
    orientation = np.asarray(_values(datasets[0], "ImageOrientationPatient"))
    normal = np.cross(orientation[:3], orientation[3:])
    positions = []
    for d in datasets:
        position = _values(d, "ImagePositionPatient")
        if position is None or len(position) != 3:
            raise DicomSeriesError(
                "an instance has no usable ImagePositionPatient: a series needs it"
            )
        positions.append(float(np.dot(position, normal)))
    if len(set(np.round(positions, 3))) != len(positions):
        raise DicomSeriesError("two instances lie at the same position: send each slice once")
    order = np.argsort(positions, kind="stable")
    first = images[0]
    return DecodedImage(
        "dicom",
        [images[i].frames[0] for i in order],
        first.width,
        first.height,
        source=Series([datasets[i] for i in order]),
        pixel_size_um=first.pixel_size_um,  # one spacing: checked above
    )
