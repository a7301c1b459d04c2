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
from dataclasses import replace

from app.codecs.errors import EmptyInputError, NotAnImageError, UnsupportedFormatError
from app.codecs.frames import DecodedImage, DecodeFn, Format, Limits, WorkCheck
from app.codecs.magic import JP2, is_bmp, is_dicom, is_heif, is_jpeg, is_png, is_tiff, is_webp
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
]
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


# In the order messages list them; tried by priority (DICOM first: its preamble may
# itself start with a TIFF header). DICOM is recognised without a decoder until the
# `dicom` extra gives it one (default_decoders).
DICOM = Format("dicom", "DICOM", is_dicom, None, 0, "application/dicom", (".dcm", ".dicom"))
BASE_FORMATS = (
    Format(
        "png",
        "PNG",
        is_png,
        pillow_decoder("PNG", "PNG", "png", True),
        10,
        "image/png",
        (".png",),
    ),
    Format(
        "jpeg",
        "JPEG",
        is_jpeg,
        pillow_decoder("JPEG", "JPEG", "jpeg", False),
        20,
        "image/jpeg",
        (".jpg", ".jpeg"),
    ),
    Format(
        "tiff",
        "TIFF",
        is_tiff,
        pillow_decoder("TIFF", "TIFF", "tiff", True, tiff_pixel_size_um),
        30,
        "image/tiff",
        (".tif", ".tiff", ".btf"),
    ),
    DICOM,
    Format("gif", "GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a"), priority=90),
    Format("bmp", "BMP", is_bmp, priority=90),
    Format("webp", "WebP", is_webp, priority=90),
    Format("heif", "HEIF/AVIF", is_heif, priority=90),
    Format("jp2", "JPEG 2000", lambda h: h[:12] == JP2, priority=90),
    Format("psd", "Photoshop", lambda h: h[:4] == b"8BPS", priority=90),
)


def default_decoders(window: object | None = None) -> Decoders:
    """The formats this installation reads: DICOM decoded (with ``window``, a
    ``app.codecs.dicom.Window``) when the `dicom` extra (pydicom) is installed."""
    decoders = Decoders(BASE_FORMATS)
    if importlib.util.find_spec("pydicom") is None:
        return decoders
    from app.codecs.dicom import dicom_decoder
    from app.codecs.dicom_pixels import Window

    decode = dicom_decoder(window if isinstance(window, Window) else None)
    return decoders.with_format(replace(DICOM, decode=decode))


@functools.cache
def _plain() -> Decoders:
    return default_decoders()


def decode(data: bytes, limits: Limits | int, decoders: Decoders | None = None) -> DecodedImage:
    """``decoders.decode(data, limits)``; by default the installation's formats, no card window."""
    return (decoders or _plain()).decode(data, limits)
