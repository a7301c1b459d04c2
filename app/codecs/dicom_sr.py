"""Class-index masks -> a DICOM Comprehensive 3D SR, TID 1500 (Measurement Report), about the
SEG that ``format=dicom-seg`` makes of the same masks (IHE AI Results: the segmentation in a
SEG, its measurements in an SR that references the SEG's segments).

Per segment (non-background class): its volume in mm³, the sum over its frames of pixels x
pixel area x the frame's extent along the slice normal (half the distance to each
neighbouring slice position, so uneven gaps count as they are; never Slice Thickness), or,
for a single frame, its area in mm²; the algorithm (the model's name and version) beside
each; and, for an object model (its card states ``objects``), the number of objects of
each segment (``counts``). The SR's UIDs derive from the source series and the model, as
the SEG's do. Nothing here logs, and no message quotes an attribute value.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from scipy import ndimage

from app.codecs.dicom_geometry import geometry, volumes
from app.codecs.dicom_seg import (
    MANUFACTURER,
    _complete,
    _lo,
    derived_uid,
    encode_seg,
    part10,
    seg_uids,
)

SERIES_NUMBER = 9002  # after the SEG's 9001
IMAGING = hd.sr.CodedConcept("363679005", "SCT", "Imaging")  # the procedure reported
# A segment's objects: DCM 111406 "Number of similar findings", unitless ("1" in UCUM).
COUNT = (codes.DCM.NumberOfSimilarFindings, codes.UCUM.NoUnits)
FACES = ndimage.generate_binary_structure(3, 1)  # 6-connected: 4-connected within a slice


def measurements(
    sources: Sequence[Dataset], masks: Sequence[np.ndarray], classes: Sequence[str]
) -> dict[int, tuple[str, float]]:
    """Segment number -> ("volume", mm³) for several frames, ("area", mm²) for one."""
    along, area = geometry(sources)
    if len(along) != len(masks):
        raise ValueError(f"{len(masks)} masks for a source with {len(along)} frame(s)")
    counts = np.array([np.bincount(m.ravel(), minlength=len(classes)) for m in masks])
    if len(masks) == 1:
        return {i: ("area", float(counts[0, i] * area)) for i in range(1, len(classes))}
    by_class = volumes(sources, counts)
    return {i: ("volume", float(by_class[i])) for i in range(1, len(classes))}


def component_counts(
    along: Sequence[float], masks: Sequence[np.ndarray], classes: Sequence[str], min_size: int
) -> dict[int, int]:
    """Segment number -> its objects: the face-connected components of its pixels through
    the frames in slice order (in one frame, format=objects' 4-connected components), those
    of fewer than ``min_size`` pixels (voxels) left out."""
    order = np.argsort(np.asarray(along, dtype=np.float64), kind="stable")
    volume = np.stack([masks[i] for i in order])
    out = {}
    for index in range(1, len(classes)):
        labels, n = ndimage.label(volume == index, structure=FACES)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        out[index] = int(np.count_nonzero(sizes >= max(min_size, 1)))
    return out


def _measurement(
    kind: str, value: float, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.Measurement:
    name, unit = {
        "volume": (codes.SCT.Volume, codes.UCUM.CubicMillimeter),
        "area": (codes.SCT.Area, codes.UCUM.SquareMillimeter),
        "count": COUNT,
    }[kind]
    return hd.sr.Measurement(name=name, value=round(value, 3), unit=unit, algorithm_id=algorithm)


def _groups(
    seg: hd.seg.Segmentation,
    series: Sequence[Dataset],
    values: dict[int, tuple[str, float]],
    counts: dict[int, int],
    classes: Sequence[str],
    algorithm: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """One measurement group per segment the SEG carries: its volume (or area) and number of
    objects when counted, the SEG's segment and the source images referenced."""
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
        figures = [_measurement(kind, value, algorithm)]
        if number in counts:
            figures.append(_measurement("count", counts[number], algorithm))
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
                measurements=figures,
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
    counts: dict[int, int] | None = None,
) -> bytes:
    """A Comprehensive 3D SR (Part 10 bytes) measuring each segment of the SEG that
    ``encode_seg`` makes of the same arguments, which it references by that SEG's UIDs;
    ``counts``: segment number -> its number of objects, for an object model.
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
            imaging_measurements=_groups(seg, series, values, counts or {}, classes, algorithm),
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
