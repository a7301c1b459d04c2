"""Bytes -> image frames: the input registry, formats recognised by their magic numbers.

A small registry (nnU-Net's reader/writer registry, reduced): each ``Format``
has a ``matches(head)`` test on the first bytes and, when it is decoded, a
``decode(data, limits)`` (app/codecs/pillow.py, app/codecs/dicom.py). Formats
are tried by ascending ``priority``; a recognised format without a decoder is
refused with UnsupportedFormatError naming the ones that are decoded.

A registry (``Decoders``) is built per app by ``default_decoders``, never
changed afterwards: DICOM (priority 0, before TIFF, because a DICOM preamble
may itself start with a TIFF header) is recognised everywhere (415 without
the `dicom` extra) and decoded, with the model card's window, when pydicom is
installed; its DecodedImage carries the pydicom dataset in ``source`` (for
DICOM SEG, which references it).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable

from app.codecs.errors import EmptyInputError, NotAnImageError, UnsupportedFormatError
from app.codecs.frames import DecodedImage, DecodeFn, Format, Limits, WorkCheck
from app.codecs.pillow import pillow_decoder, tiff_pixel_size_um

__all__ = [
    "BASE_FORMATS",
    "DecodeFn",
    "DecodedImage",
    "Decoders",
    "Format",
    "Limits",
    "WorkCheck",
    "decode",
    "default_decoders",
    "is_dicom",
]
_JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
HEAD_BYTES = 132  # enough for every signature, DICOM's "DICM" at 128 included


class Decoders:
    """An input-format registry: the formats recognised, tried by ascending priority.

    Built per app from its model card (the DICOM decoder carries the card's window),
    never a module global that start-up mutates; ``with_format`` returns a new one.
    """

    def __init__(self, formats: Iterable[Format]) -> None:
        self._formats: dict[str, Format] = {}
        for fmt in formats:
            self._formats[fmt.name] = fmt

    def with_format(self, fmt: Format) -> Decoders:
        """A registry with ``fmt`` added, or replacing the format of the same name."""
        return Decoders([*(f for f in self._formats.values() if f.name != fmt.name), fmt])

    def formats(self) -> list[Format]:
        """The formats in the order they are tried."""
        return sorted(self._formats.values(), key=lambda f: f.priority)

    def supported(self) -> list[str]:
        """Labels of the formats that are decoded, in the order tried (``DICOM, PNG, ...``)."""
        return [f.label for f in self.formats() if f.decode is not None]

    def decode(self, data: bytes, limits: Limits | int) -> DecodedImage:
        """Recognise ``data`` by magic number and decode it into frames.

        limits: checked from the header before any pixel is decoded (ImageTooLargeError);
        an int is a pixel limit alone (width x height x frames, inclusive).
        Raises EmptyInputError, NotAnImageError, UnsupportedFormatError, CorruptImageError.
        """
        if isinstance(limits, int):
            limits = Limits(limits)
        if not data:
            raise EmptyInputError("the request body is empty: send the image bytes")
        head = data[:HEAD_BYTES]
        for fmt in self.formats():
            if fmt.matches(head):
                if fmt.decode is None:
                    raise UnsupportedFormatError(
                        f"{fmt.label} images are not supported; send {', '.join(self.supported())}"
                    )
                return fmt.decode(data, limits)
        listed = "/".join(f.label for f in self._formats.values() if f.decode is not None)
        raise NotAnImageError(
            f"the body is not an image this service knows ({len(data)} bytes, no {listed} "
            f"signature); send {', '.join(self.supported())}"
        )


def is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def is_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 (``DICM`` at offset 128), or a bare dataset without preamble.

    A bare dataset must open with an element of group 0002 or 0008 (the first groups
    of every image) in either byte order, followed by a valid explicit VR or, for
    implicit VR little endian, a plausible value length: about 1 in 10^9 random heads
    pass, and no PNG/JPEG/TIFF/GIF/PDF/ZIP signature does.
    """
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    if head[:2] in (b"\x02\x00", b"\x08\x00"):  # little endian
        return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") <= 1024
    return head[:2] in (b"\x00\x02", b"\x00\x08") and head[4:6] in _VRS  # explicit big endian


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _is_bmp(head: bytes) -> bool:
    # "BM", then a DIB header whose size (offset 14) is one of the known ones.
    return head[:2] == b"BM" and head[14:18] in {
        n.to_bytes(4, "little") for n in (12, 16, 40, 52, 56, 64, 108, 124)
    }


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis")


# In the order messages list them; tried by priority (DICOM first: its preamble may
# itself start with a TIFF header). DICOM is recognised without a decoder until the
# `dicom` extra gives it one (default_decoders).
BASE_FORMATS = (
    Format("png", "PNG", is_png, pillow_decoder("PNG", "PNG", "png", True), priority=10),
    Format("jpeg", "JPEG", is_jpeg, pillow_decoder("JPEG", "JPEG", "jpeg", False), 20),
    Format(
        "tiff",
        "TIFF",
        is_tiff,
        pillow_decoder("TIFF", "TIFF", "tiff", True, tiff_pixel_size_um),
        30,
    ),
    Format("dicom", "DICOM", is_dicom, None, priority=0),
    Format("gif", "GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a"), priority=90),
    Format("bmp", "BMP", _is_bmp, priority=90),
    Format("webp", "WebP", _is_webp, priority=90),
    Format("heif", "HEIF/AVIF", _is_heif, priority=90),
    Format("jp2", "JPEG 2000", lambda h: h[:12] == _JP2, priority=90),
    Format("psd", "Photoshop", lambda h: h[:4] == b"8BPS", priority=90),
)


def default_decoders(window: object | None = None) -> Decoders:
    """The formats this installation reads: DICOM decoded (with ``window``, a
    ``app.codecs.dicom.Window``) when the `dicom` extra (pydicom) is installed."""
    decoders = Decoders(BASE_FORMATS)
    if importlib.util.find_spec("pydicom") is None:
        return decoders
    from app.codecs.dicom import dicom_format
    from app.codecs.dicom_pixels import Window

    return decoders.with_format(dicom_format(window if isinstance(window, Window) else None))


@functools.cache
def _plain() -> Decoders:
    return default_decoders()


def decode(data: bytes, limits: Limits | int, decoders: Decoders | None = None) -> DecodedImage:
    """``decoders.decode(data, limits)``; by default the installation's formats, no card window."""
    return (decoders or _plain()).decode(data, limits)
