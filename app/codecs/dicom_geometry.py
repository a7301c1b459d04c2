"""Where a DICOM image's pixels are in the patient: their spacing, and each frame's position
and extent along the slice normal -- what areas and volumes in physical units need
(format=dicom-sr, and the object formats' ``area_um2`` and ``volume_mm3``).

No message quotes an attribute value. pydicom only (the ``dicom`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from app.codecs.errors import DicomSegError


def pixel_spacing_um(dataset: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in µm -- Pixel Spacing in the patient, of a classic
    image or of an enhanced multi-frame one's shared functional groups; None when the
    image does not state it (or states nonsense). Imager Pixel Spacing (at the detector of
    a projection image) is not a size in the patient and is not used."""
    try:
        spacing = dataset.get("PixelSpacing")
        if spacing is None and "SharedFunctionalGroupsSequence" in dataset:
            shared = dataset.SharedFunctionalGroupsSequence[0]
            spacing = shared.PixelMeasuresSequence[0].PixelSpacing
        rows, columns = (float(v) * 1000.0 for v in spacing)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    good = all(np.isfinite(v) and v > 0 for v in (rows, columns))
    return (rows, columns) if good else None


def geometry(sources: Sequence[Dataset]) -> tuple[list[float], float]:
    """(each frame's position along the slice normal in mm, in frame order; the pixel area
    in mm²). DicomSegError when the sources do not state their geometry."""
    first = sources[0]
    try:
        if int(first.get("NumberOfFrames") or 1) > 1:  # an enhanced multi-frame image
            shared = first.SharedFunctionalGroupsSequence[0]
            spacing = shared.PixelMeasuresSequence[0].PixelSpacing
            orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
            positions = [
                item.PlanePositionSequence[0].ImagePositionPatient
                for item in first.PerFrameFunctionalGroupsSequence
            ]
        else:
            spacing, orientation = first.PixelSpacing, first.ImageOrientationPatient
            positions = [s.ImagePositionPatient for s in sources]
        row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        normal = np.cross(row, column)
        along = [float(np.dot(np.asarray(p, float), normal)) for p in positions]
        area = float(spacing[0]) * float(spacing[1])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise DicomSegError(
            "the source DICOM does not state its pixel spacing, orientation and positions, "
            "which a volume in mm³ needs; ask format=dicom-seg or format=objects"
        ) from None
    if not area > 0 or not np.isfinite(along).all():
        raise DicomSegError("the source DICOM's pixel spacing or positions are not usable")
    return along, area


def extents(along: Sequence[float]) -> npt.NDArray[np.float64]:
    """Each frame's thickness along the normal: half the gap to each neighbour (the end
    frames: the gap to their one neighbour); 0 for a single frame."""
    z = np.asarray(along, dtype=np.float64)
    if z.size < 2:
        return np.zeros(z.size)
    order = np.argsort(z, kind="stable")
    gaps = np.diff(z[order])
    if (gaps <= 0).any():
        raise DicomSegError("two frames of the source share a position: no volume")
    sorted_extent = np.empty(z.size)
    sorted_extent[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    sorted_extent[0], sorted_extent[-1] = gaps[0], gaps[-1]
    result = np.empty(z.size)
    result[order] = sorted_extent
    return result


def volumes(sources: Sequence[Dataset], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Each class's volume in mm³ from its pixel count per frame (``counts``: frames x
    classes, frames in the order of ``geometry``): pixels x pixel area x the frame's extent."""
    along, area = geometry(sources)
    if len(along) != len(counts):
        raise ValueError(f"{len(counts)} frames counted for a source with {len(along)}")
    result: npt.NDArray[np.float64] = (counts * extents(along)[:, None]).sum(axis=0) * area
    return result
