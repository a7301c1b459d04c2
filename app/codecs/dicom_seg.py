"""Class-index masks -> a DICOM Segmentation (BINARY) that references its source image.

One segment per non-background class (segment number = class index, Segment Label =
class name), the model as algorithm identification, a new series and instance, empty
frames omitted. highdicom copies the patient, study and frame-of-reference attributes
from the source, as the standard requires: the SEG is the one place where they go.
Nothing here logs, and no message quotes an attribute value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from io import BytesIO

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes

from app.codecs.errors import DicomSegError

MANUFACTURER = "unet-service"
# Sorts after the scanner's own series (usually 1..100) in a viewer's series list.
SERIES_NUMBER = 9001
# The model's class names say what a segment is; the coded concepts are the generic
# "Tissue" (SCT 85756007) because a card carries no codes.
CATEGORY = codes.SCT.Tissue
PROPERTY_TYPE = codes.SCT.Tissue
# A secondary capture has Pixel Spacing but no Slice Thickness; highdicom then writes a
# Pixel Measures item that its own reader rejects. 1 mm is the nominal thickness of a
# 2-D image, used only where the source has none.
NOMINAL_SLICE_THICKNESS_MM = 1.0
# Type 1 in the source: without them the SEG cannot reference it, join its study or
# say what it was derived from.
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
# Type 2 (present, may be empty) patient/study attributes that highdicom copies; many
# secondary captures lack some, and an empty value is what the standard allows.
TYPE2 = {
    "PatientName": "PN", "PatientID": "LO", "PatientBirthDate": "DA", "PatientSex": "CS",
    "StudyDate": "DA", "StudyTime": "TM", "ReferringPhysicianName": "PN", "StudyID": "SH",
    "AccessionNumber": "SH",
}  # fmt: skip


def _lo(text: str) -> str:
    """A value fit for VR LO: at most 64 characters, no backslash or control characters."""
    return "".join(c if c.isprintable() and c != "\\" else " " for c in text)[:64]


def _frame_count(source: Dataset) -> int:
    try:
        return int(source.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise DicomSegError("the source DICOM's Number of Frames is not a number") from None


def _has_plane_positions(source: Dataset) -> bool:
    """Every frame of a multi-frame image carries a Plane Position (Patient)."""
    per_frame = source.get("PerFrameFunctionalGroupsSequence")
    return (
        "FrameOfReferenceUID" in source
        and per_frame is not None
        and all("PlanePositionSequence" in item for item in per_frame)
    )


def _complete(source: Dataset) -> Dataset:
    """A shallow copy of source (checked) with its missing Type 2 attributes present, empty."""
    completed = Dataset(source)  # new element dict, same elements: the source is unchanged
    completed.file_meta = getattr(source, "file_meta", FileMetaDataset())
    for keyword, vr in TYPE2.items():
        if keyword not in completed:
            completed.add_new(keyword, vr, None)
    return completed


def _pixel_measures(source: Dataset, frames: int) -> hd.PixelMeasuresSequence | None:
    if frames > 1 or "PixelSpacing" not in source or "SliceThickness" in source:
        return None  # highdicom copies the source's own, complete measures
    spacing = [float(v) for v in source.PixelSpacing]
    return hd.PixelMeasuresSequence(spacing, NOMINAL_SLICE_THICKNESS_MM)


def _check_masks(
    series: Sequence[Dataset], masks: Sequence[np.ndarray], classes: Sequence[str]
) -> npt.NDArray[np.uint8]:
    """The masks stacked as F x H x W uint8, checked against the sources and the classes."""
    source = series[0]
    frames = sum(_frame_count(s) for s in series)
    if len(masks) != frames:
        raise ValueError(f"{len(masks)} masks for a source with {frames} frame(s)")
    if len(classes) < 2:
        raise ValueError(f"classes must name background and >= 1 class, got {len(classes)}")
    shape = (int(source.Rows), int(source.Columns))
    for i, mask in enumerate(masks):
        if mask.shape != shape:
            raise ValueError(f"mask {i} is {mask.shape}, the source frames are {shape}")
    stacked = np.stack([np.asarray(m, dtype=np.uint8) for m in masks])
    if stacked.size and int(stacked.max()) >= len(classes):
        raise ValueError(f"mask value {int(stacked.max())} is no class index of {len(classes)}")
    return stacked


def check_source(source: Dataset) -> None:
    """DicomSegError unless a SEG can reference ``source``: call it before inference.

    Needs the Type 1 references (SOP class/instance, study, series UIDs, modality) and,
    for a multi-frame image, a plane position per frame.
    """
    missing = [keyword for keyword in REQUIRED if keyword not in source]
    if missing:
        raise DicomSegError(
            f"the source DICOM lacks {', '.join(missing)}, which a DICOM SEG must reference; "
            "ask format=rle or format=png"
        )
    frames = _frame_count(source)
    if frames > 1 and not _has_plane_positions(source):
        raise DicomSegError(
            f"this multi-frame DICOM ({frames} frames) has no plane positions, which a DICOM "
            "SEG of every frame needs; ask format=rle for per-frame masks"
        )


def _segments(
    classes: Sequence[str], model_name: str, model_version: str
) -> list[hd.seg.SegmentDescription]:
    """One segment per non-background class, the model as the algorithm that made it."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_lo(model_name), family=codes.DCM.ArtificialIntelligence, version=_lo(model_version)
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=index,
            segment_label=_lo(label),
            segmented_property_category=CATEGORY,
            segmented_property_type=PROPERTY_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for index, label in enumerate(classes)
        if index > 0
    ]


def derived_uid(*parts: str) -> str:
    """A UID derived from ``parts``: ``2.25.`` + 128 bits of their SHA-256 (PS3.5 B.2),
    at most 44 characters. The same parts give the same UID, on any machine."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def seg_uids(sources: Sequence[Dataset], model_sha256: str, kind: str = "seg") -> tuple[str, str]:
    """(Series, SOP Instance) UIDs of the SEG (``kind`` "seg", or another result: "sr") of
    ``sources`` by the model ``model_sha256``: one series per source series, model and kind,
    one instance per set of sources, so that sending the same series again replaces its
    result (a PACS that overwrites) instead of adding one."""
    series = str(sources[0].SeriesInstanceUID)
    instances = sorted(str(s.SOPInstanceUID) for s in sources)
    return derived_uid(f"{kind}-series", series, model_sha256), derived_uid(
        f"{kind}-instance", series, model_sha256, *instances
    )


def encode_seg(
    sources: Dataset | Sequence[Dataset],
    masks: Sequence[np.ndarray],
    classes: Sequence[str],
    model_name: str,
    model_version: str,
    model_sha256: str = "",
) -> bytes:
    """A DICOM SEG (Part 10 bytes, explicit VR little endian) of the masks over the sources.

    sources: the decoded image's dataset (pixel data may be removed), or the datasets
    of one series' single-frame instances in slice order (one SEG for the series).
    masks: one H x W uint8 array of class indices per source frame, in frame order.
    model_sha256: with the source series, it makes the SEG's UIDs (seg_uids).
    classes: the model's class names, index 0 = background (no segment).
    Raises DicomSegError (for the service: 422, other formats still work) when the
    source cannot carry a SEG; ValueError when the masks do not fit the source.
    """
    series = [sources] if isinstance(sources, Dataset) else list(sources)
    for source in series:
        check_source(source)
    pixels = _check_masks(series, masks, classes)
    series = [_complete(source) for source in series]
    segments = _segments(classes, model_name, model_version)
    series_uid, instance_uid = seg_uids(series, model_sha256)

    def build() -> Dataset:
        seg = hd.seg.Segmentation(
            source_images=series,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=instance_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=_lo(model_name),
            software_versions=_lo(model_version),
            device_serial_number="0",
            pixel_measures=_pixel_measures(series[0], len(masks)),
            content_label="UNET",
            content_description=_lo(f"{model_name} {model_version}"),
            omit_empty_frames=True,
        )
        seg.SeriesDescription = _lo(f"SEG {model_name}")
        return seg

    return part10(
        build,
        "a DICOM SEG cannot be made for this source image: highdicom rejected its "
        "attributes or geometry (e.g. a CT without Frame of Reference); ask format=rle "
        "or format=png",
    )


def part10(build: Callable[[], Dataset], refusal: str) -> bytes:
    """``build()``'s dataset as Part 10 bytes; DicomSegError(refusal) when highdicom rejects
    the source: its messages may quote source attribute values, so they are replaced,
    never chained."""
    try:
        out = BytesIO()
        dcmwrite(out, build(), enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError):
        raise DicomSegError(refusal) from None
    return out.getvalue()
