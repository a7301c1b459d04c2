"""DICOM Part 10 in: bytes -> model-ready frames, limits checked before pixels are decoded.

Pipeline of one request (pydicom 3 with the pylibjpeg plugins)::

    bytes ─▶ dcmread (header + still-encoded pixel bytes) ─▶ checks: Pixel Data present,
      transfer syntax decodable, Rows x Columns x NumberOfFrames (and the work) within the limits
      ─▶ per frame: decode ─▶ gray: modality LUT (HU for CT) ─▶ window ─▶ MONOCHROME1 inverted
                           └▶ colour: YBR -> RGB, palette expanded, > 8 bits scaled ─▶ uint8

Intensity policy (API.md, "normalization"): a grayscale frame becomes 0-255 uint8
through the model card's ``window`` (``{"center": c, "width": w}`` in modality
units, the DICOM linear VOI function of PS3.3 C.11.2.1.2.1) when the card has one,
otherwise through the frame's own robust range: its 0.5th and 99.5th percentiles map
to 0 and 255 (clipped), a constant frame maps to 0. The file's own Window Center /
Width are display hints of the acquiring site, not the model's training window, so
they are ignored. MONOCHROME1 (bright = low values) is inverted after windowing, as a
viewer shows it. Colour frames stay RGB uint8 (16-bit colour is scaled, 65535 -> 255).

No patient data leaves this module: messages name only standard things (transfer
syntax and SOP class names, sizes), never attribute values, and nothing is logged.
pydicom's and highdicom's value-quoting warnings are switched off below for the
same reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.codecs.dicom_geometry import pixel_spacing_um
from app.codecs.dicom_pixels import (
    Window,
    colour_to_uint8,
    modality_values,
    to_uint8,
)
from app.codecs.errors import (
    CorruptImageError,
    DicomNoPixelDataError,
    DicomTransferSyntaxError,
    UnsupportedFormatError,
)
from app.codecs.frames import DecodedImage, DecodeFn, Limits
from app.privacy import quiet_value_warnings

LABEL = "DICOM"
_PIXEL_DATA_TAG, _PIXEL_DATA_TAG_BE = b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"  # (7FE0,0010)
_GRAY = {"MONOCHROME1", "MONOCHROME2"}
# Decoders return these as RGB (pydicom's as_rgb=True converts YBR_FULL(_422); JPEG 2000
# reverses RCT/ICT itself).
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR"}


quiet_value_warnings()


# -- reading ----------------------------------------------------------------------------


def read_dataset(data: bytes) -> Dataset:
    """Parse the whole file without decoding pixels (the pixel bytes stay encoded).

    Raises CorruptImageError for bytes pydicom cannot parse, DicomNoPixelDataError
    for an object without an image.
    """
    preamble = data[128:132] == b"DICM"
    try:
        ds = dcmread(BytesIO(data), force=not preamble)
        # Touch the elements used below: pydicom converts values lazily, and a
        # malformed one must fail here, not in the middle of decoding.
        _ = ds.get("PixelData"), ds.get("Rows"), ds.get("Columns"), ds.get("NumberOfFrames")
    except Exception:  # hostile bytes make pydicom's parser raise anything (struct, EOF, ...)
        raise CorruptImageError(
            f"{LABEL} data is corrupt or truncated: the header could not be parsed"
        ) from None
    if len(ds) == 0:
        raise CorruptImageError(f"{LABEL} data is corrupt or truncated: no data elements")
    if "PixelData" not in ds:
        # pydicom drops an element cut short by the end of the file: Pixel Data's tag
        # in the bytes means a truncated image (400), not an object without one (415).
        # An image SOP class without it (or no SOP class at all) was cut short before.
        sop_class = _sop_class(ds)
        if _PIXEL_DATA_TAG in data or _PIXEL_DATA_TAG_BE in data:
            raise CorruptImageError(f"{LABEL} data is truncated inside the Pixel Data")
        if sop_class == "unknown" or "Image Storage" in sop_class:
            raise CorruptImageError(
                f"{LABEL} data is truncated or corrupt: no Pixel Data (SOP class {sop_class})"
            )
        raise DicomNoPixelDataError(
            f"the {LABEL} object holds no image (no Pixel Data; SOP class {sop_class}); "
            "send an image instance such as CT, MR, X-ray or secondary capture"
        )
    return ds


def standard_name(uid: object) -> str | None:
    """The DICOM standard's name of a UID ("CT Image Storage"), None for any other UID."""
    text = str(uid or "")
    name = str(UID(text).name) if text else ""
    return name if name and name != text else None


def _sop_class(ds: Dataset) -> str:
    """The SOP class's standard name (never a private UID)."""
    return standard_name(ds.get("SOPClassUID")) or "unknown"


def _transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax, inferred from the encoding for files without one in their meta."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    if ds["PixelData"].is_undefined_length:  # encapsulated = compressed, codec unknown
        raise DicomTransferSyntaxError(
            f"{LABEL}: compressed Pixel Data without a Transfer Syntax UID; send a Part 10 "
            "file with its file meta information"
        )
    implicit, little = ds.original_encoding
    uid = (
        ImplicitVRLittleEndian
        if implicit
        else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = uid
    return uid


def _check_decodable(uid: UID) -> None:
    name = standard_name(uid) or "a private transfer syntax"
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DicomTransferSyntaxError(
            f"{LABEL} transfer syntax {name} cannot be decoded; send uncompressed (little/big "
            "endian), RLE, JPEG (baseline, extended, lossless), JPEG-LS or JPEG 2000"
        )


def _geometry(ds: Dataset, limits: Limits) -> tuple[int, int, int]:
    """(rows, columns, frames) from the header, checked against the limits."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        raise CorruptImageError(
            f"{LABEL}: Rows, Columns or Number of Frames is missing or not a number"
        ) from None
    if rows < 1 or columns < 1 or frames < 1:
        raise CorruptImageError(f"{LABEL}: {columns} x {rows} px x {frames} frame(s) is empty")
    limits.check(columns, rows, frames, LABEL)
    return rows, columns, frames


def _decoded_frames(ds: Dataset) -> Iterator[np.ndarray]:
    """Frames as decoded (gray H x W stored values, colour H x W x 3 RGB), one at a time."""
    try:
        yield from iter_pixels(ds, as_rgb=True)
    except Exception:  # plugins raise their own types (RuntimeError, ValueError, ...)
        name = standard_name(_transfer_syntax(ds)) or "private transfer syntax"
        raise CorruptImageError(
            f"{LABEL} pixel data ({name}) is corrupt or truncated: it could not be decoded"
        ) from None


def modality_frames(ds: Dataset) -> list[npt.NDArray[np.float64]]:
    """Every gray frame's modality values (H x W float64); for tests and tools.

    ds: a dataset from read_dataset, pixel data still present.
    """
    _check_photometric(ds)
    return [modality_values(ds, frame) for frame in _decoded_frames(ds)]


def _check_photometric(ds: Dataset) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _GRAY | _COLOUR:
        raise UnsupportedFormatError(
            f"{LABEL}: photometric interpretation {photometric or '(none)'} is not supported; "
            "send MONOCHROME1/2, RGB, YBR_FULL(_422) or PALETTE COLOR"
        )
    return photometric


# -- the registry entry -------------------------------------------------------------------


def decode_dicom(data: bytes, limits: Limits, window: Window | None = None) -> DecodedImage:
    """DICOM bytes -> DecodedImage(format "dicom", frames, width, height, source=dataset).

    frames: one per DICOM frame, H x W uint8 (gray, after the intensity policy above)
    or H x W x 3 uint8 (RGB). source: the pydicom Dataset with its Pixel Data removed,
    for DICOM SEG. limits: Rows x Columns x NumberOfFrames (and the work it costs), checked
    before any pixel is decoded. Raises CorruptImageError (400), DicomNoPixelDataError,
    DicomTransferSyntaxError, UnsupportedFormatError (415), ImageTooLargeError (413).
    """
    ds = read_dataset(data)
    rows, columns, _ = _geometry(ds, limits)
    _check_decodable(_transfer_syntax(ds))
    photometric = _check_photometric(ds)
    frames: list[np.ndarray] = []
    for decoded in _decoded_frames(ds):
        if photometric in _GRAY:
            gray = to_uint8(modality_values(ds, decoded), window)
            frames.append(255 - gray if photometric == "MONOCHROME1" else gray)
        else:
            frames.append(colour_to_uint8(ds, decoded))
    del ds.PixelData  # SEG needs the attributes, not the (possibly large) encoded pixels
    return DecodedImage(
        "dicom", frames, columns, rows, source=ds, pixel_size_um=pixel_spacing_um(ds)
    )


def dicom_decoder(window: Window | None = None) -> DecodeFn:
    """The DICOM entry's decoder for the input registry (app/codecs/images.py), with the
    model's window."""

    def decode(data: bytes, limits: Limits) -> DecodedImage:
        return decode_dicom(data, limits, window)

    return decode
