"""Class-index masks -> a DICOM Comprehensive 3D SR, TID 1500 (Measurement Report), about the
SEG that ``format=dicom-seg`` makes of the same masks (IHE AI Results: the segmentation in a
SEG, its measurements in an SR that references the SEG's segments).

Per segment (non-background class): its volume in mm³, the sum over its frames of pixels x
pixel area x the frame's extent along the slice normal (half the distance to each
neighbouring slice position, so uneven gaps count as they are; never Slice Thickness), or,
for a single frame, its area in mm²; the algorithm (the model's name and version) beside
each. The SR's UIDs derive from the source series and the model, as the SEG's do.
Nothing here logs, and no message quotes an attribute value.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from app.codecs.dicom_seg import (
    MANUFACTURER,
    _complete,
    _lo,
    derived_uid,
    encode_seg,
    part10,
    seg_uids,
)
from app.codecs.errors import DicomSegError

SERIES_NUMBER = 9002  # after the SEG's 9001
IMAGING = hd.sr.CodedConcept("363679005", "SCT", "Imaging")  # the procedure reported


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


def measurements(
    sources: Sequence[Dataset], masks: Sequence[np.ndarray], classes: Sequence[str]
) -> dict[int, tuple[str, float]]:
    """Segment number -> ("volume", mm³) for several frames, ("area", mm²) for one."""
    along, area = geometry(sources)
    if len(along) != len(masks):
        raise ValueError(f"{len(masks)} masks for a source with {len(along)} frame(s)")
    thickness = extents(along)
    out = {}
    for index in range(1, len(classes)):
        counts = np.array([int(np.count_nonzero(m == index)) for m in masks], dtype=np.float64)
        if len(masks) == 1:
            out[index] = ("area", float(counts[0] * area))
        else:
            out[index] = ("volume", float((counts * thickness).sum() * area))
    return out


def _groups(
    seg: hd.seg.Segmentation,
    series: Sequence[Dataset],
    values: dict[int, tuple[str, float]],
    classes: Sequence[str],
    algorithm: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """One measurement group per segment the SEG carries: its volume (or area), the SEG's
    segment and the source images referenced."""
    present = {int(item.SegmentNumber) for item in seg.SegmentSequence}
    # highdicom's ReferencedSegment.from_segmentation misses a one-segment SEG's segment
    # (identified in the shared functional groups): the references are written out here.
    images = [
        hd.sr.SourceImageForSegmentation(str(s.SOPClassUID), str(s.SOPInstanceUID)) for s in series
    ]
    groups = []
    for number, (kind, value) in values.items():
        if number not in present:
            continue
        name, unit = (
            (codes.SCT.Volume, codes.UCUM.CubicMillimeter)
            if kind == "volume"
            else (codes.SCT.Area, codes.UCUM.SquareMillimeter)
        )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=derived_uid("tracking", seg.SOPInstanceUID, str(number)),
                    identifier=_lo(f"segment {number}: {classes[number]}"),
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    seg.SOPClassUID, seg.SOPInstanceUID, number, source_images=images
                ),
                finding_type=codes.SCT.Tissue,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=name, value=round(value, 3), unit=unit, algorithm_id=algorithm
                    )
                ],
            )
        )
    return groups


def encode_sr(
    sources: Dataset | Sequence[Dataset],
    masks: Sequence[np.ndarray],
    classes: Sequence[str],
    model_name: str,
    model_version: str,
    model_sha256: str = "",
) -> bytes:
    """A Comprehensive 3D SR (Part 10 bytes) measuring each segment of the SEG that
    ``encode_seg`` makes of the same arguments, which it references by that SEG's UIDs.
    Raises DicomSegError (422) when the source cannot carry a SEG or states no geometry."""
    series = [sources] if isinstance(sources, Dataset) else list(sources)
    seg_bytes = encode_seg(series, masks, classes, model_name, model_version, model_sha256)
    values = measurements(series, masks, classes)
    series_uid, instance_uid = seg_uids(series, model_sha256, kind="sr")

    def build() -> Dataset:
        seg = hd.seg.Segmentation.from_dataset(dcmread(BytesIO(seg_bytes)), copy=False)
        algorithm = hd.sr.AlgorithmIdentification(_lo(model_name), _lo(model_version))
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=derived_uid("device", model_sha256 or model_name), name=_lo(model_name)
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=device),
            procedure_reported=IMAGING,
            imaging_measurements=_groups(seg, series, values, classes, algorithm),
        )
        return hd.sr.Comprehensive3DSR(
            evidence=[*(_complete(s) for s in series), seg],
            content=report,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=instance_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=True,
            series_description=_lo(f"SR {model_name}"),
        )

    return part10(
        build,
        "a DICOM SR cannot be made for this source image: highdicom rejected its "
        "attributes; ask format=dicom-seg",
    )
