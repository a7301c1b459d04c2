"""Bytes -> image frames, the format recognised by its magic number, limits checked first.

A small registry (nnU-Net's reader/writer registry, reduced): each ``Format``
has a ``matches(head)`` test on the first bytes and, when the service decodes
it, a ``decode(data, limits)``. Formats are tried by ascending
``priority``; a recognised format without a decoder is refused with
UnsupportedFormatError naming the ones that are decoded.

DICOM: the ``dicom`` entry (priority 0, before TIFF, because a DICOM
preamble may itself start with a TIFF header) is registered here without a
decoder, so DICOM is recognised (415) even without the `dicom` extra;
importing ``app.codecs`` replaces it with ``app.codecs.dicom.dicom_format()``
when pydicom is installed, whose DecodedImage carries the pydicom dataset in
``source`` (for DICOM SEG, which references it).

Pixels stay on their stored grid (EXIF orientation is not applied) and in
their stored depth: 16-bit PNG/TIFF stay uint16.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from app.codecs.errors import (
    CorruptImageError,
    EmptyInputError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)

# The service checks its own limits (Limits) from the header before any pixel
# is decoded; Pillow's global bomb check would fire first, at its own threshold,
# as a warning or a DecompressionBombError. A truncated file must raise, never
# decode to a half-grey image.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow's ways of saying "these bytes are broken" (zlib/struct errors leak from plugins;
# UserWarning is how its TIFF reader reports a corrupt directory, made an error below).
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    zlib.error,
    struct.error,
    UserWarning,
)
_JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
HEAD_BYTES = 132  # enough for every signature, DICOM's "DICM" at 128 included


@dataclass(frozen=True)
class DecodedImage:
    """An image as frames of H x W or H x W x C (C in 1..4) uint8/uint16 pixels.

    format: the registry name (``png``, ``jpeg``, ``tiff``, ``dicom``).
    frames: one array per page/frame, all ``height`` x ``width``.
    source: the format's own decoded object when a writer needs it (DICOM dataset).
    """

    format: str
    frames: list[np.ndarray]
    width: int
    height: int
    source: object | None = field(default=None, repr=False)


WorkCheck = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Limits:
    """What a decoder accepts, checked from the header before any pixel is decoded.

    pixels: width x height x frames, inclusive (UNET_MAX_IMAGE_PIXELS).
    frames: pages / frames, inclusive (UNET_MAX_FRAMES); None: no own limit.
    work: ``work(width, height, frames)`` raises ImageTooLargeError when the
        image would cost more to segment than the caller allows (thin strips,
        thousands of tiny pages); the codecs know nothing of tiles.
    """

    pixels: int
    frames: int | None = None
    work: WorkCheck | None = None

    def check(self, width: int, height: int, frames: int, label: str) -> None:
        """ImageTooLargeError (413) naming the limit that ``width x height x frames`` passes."""
        total = width * height * frames
        if total > self.pixels:
            raise ImageTooLargeError(
                f"{label} image of {width} x {height} px x {frames} frame(s) = {total} pixels "
                f"exceeds the limit of {self.pixels} (UNET_MAX_IMAGE_PIXELS)"
            )
        if self.frames is not None and frames > self.frames:
            raise ImageTooLargeError(
                f"{label} image has more than {self.frames} frames (UNET_MAX_FRAMES); "
                "send fewer per request"
            )
        if self.work is not None:
            self.work(width, height, frames)


DecodeFn = Callable[[bytes, Limits], DecodedImage]


@dataclass(frozen=True)
class Format:
    """name: registry key; label: for messages; matches(head): the magic-number test."""

    name: str
    label: str
    matches: Callable[[bytes], bool]
    decode: DecodeFn | None = None
    priority: int = 50


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Add a format, or replace the one with the same name (e.g. give DICOM a decoder)."""
    _FORMATS[fmt.name] = fmt


def formats() -> list[Format]:
    """Registered formats in the order they are tried."""
    return sorted(_FORMATS.values(), key=lambda f: f.priority)


def supported() -> list[str]:
    """Labels of the formats that are decoded, e.g. ``["PNG", "JPEG", "TIFF"]``."""
    return [f.label for f in formats() if f.decode is not None]


def decode(data: bytes, limits: Limits | int) -> DecodedImage:
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
    for fmt in formats():
        if fmt.matches(head):
            if fmt.decode is None:
                raise UnsupportedFormatError(
                    f"{fmt.label} images are not supported; send {', '.join(supported())}"
                )
            return fmt.decode(data, limits)
    raise NotAnImageError(
        f"the body is not an image this service knows ({len(data)} bytes, no PNG/JPEG/TIFF/DICOM "
        f"signature); send {', '.join(supported())}"
    )


# -- Pillow decoders ------------------------------------------------------------------

# Modes whose pixels numpy gives as they are; the others are converted first.
_NATIVE = {"L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I;16N"}
_CONVERT = {
    "1": "L",
    "P": "RGB",
    "PA": "RGBA",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "RGBX": "RGB",
    "La": "LA",
    "RGBa": "RGBA",
}


def _pixels(im: Image.Image, label: str) -> np.ndarray:
    """H x W (x C) uint8/uint16 pixels of the current frame (palette expanded, alpha kept)."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")
    elif mode in _CONVERT:
        mode, im = _CONVERT[mode], im.convert(_CONVERT[mode])
    if mode == "I":  # 32-bit integer: accepted when the values fit 16 bits (old 16-bit PNGs)
        wide = np.asarray(im)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise UnsupportedFormatError(f"{label}: 32-bit integer pixels; send 8 or 16 bits")
        return wide.astype(np.uint16)
    if mode not in _NATIVE:
        raise UnsupportedFormatError(
            f"{label}: pixel mode {mode!r} is not supported; send 8- or 16-bit gray, RGB or RGBA"
        )
    pixels = np.asarray(im)
    # I;16B arrives big-endian: make it native uint16 (no copy when it already is).
    return pixels.astype(np.uint16, copy=False) if pixels.itemsize == 2 else pixels


def _page(im: Image.Image, page: int, label: str) -> np.ndarray:
    im.seek(page)
    im.load()
    return _pixels(im, label)


def _open(data: bytes, pil_format: str, label: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[pil_format])
    except UnidentifiedImageError:
        raise CorruptImageError(
            f"{label} signature, but the header is corrupt or truncated ({len(data)} bytes)"
        ) from None
    except _PIL_ERRORS as exc:
        raise CorruptImageError(f"{label} header is corrupt or truncated: {exc}") from None


def _page_count(im: Image.Image, limits: Limits, label: str) -> int:
    """Pages of a multi-page image (TIFF pages, APNG frames), each of the first page's size.

    Walks the page headers only (no pixels), stopping as soon as a limit is
    passed, so a file declaring millions of pages is refused quickly.
    """
    width, height = im.size
    pages = 0
    while True:
        pages += 1
        limits.check(width, height, pages, label)
        try:
            im.seek(pages)
        except EOFError:
            break
        if im.size != (width, height):
            raise UnsupportedFormatError(
                f"{label}: page {pages} is {im.size[0]} x {im.size[1]} px, page 0 is "
                f"{width} x {height}; pages of one request must share a size"
            )
    im.seek(0)
    return pages


def _pillow_decoder(pil_format: str, label: str, name: str, multipage: bool) -> DecodeFn:
    def decode_with_pillow(data: bytes, limits: Limits) -> DecodedImage:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                with _open(data, pil_format, label) as im:
                    width, height = im.size
                    limits.check(width, height, 1, label)
                    pages = _page_count(im, limits, label) if multipage else 1
                    frames = [_page(im, page, label) for page in range(pages)]
        except _PIL_ERRORS as exc:
            raise CorruptImageError(f"{label} data is corrupt or truncated: {exc}") from None
        return DecodedImage(name, frames, width, height)

    return decode_with_pillow


def is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def is_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10: a 128-byte preamble, then ``DICM``."""
    return head[128:132] == b"DICM"


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _is_bmp(head: bytes) -> bool:
    # "BM", then a DIB header whose size (offset 14) is one of the known ones.
    return head[:2] == b"BM" and head[14:18] in {
        n.to_bytes(4, "little") for n in (12, 16, 40, 52, 56, 64, 108, 124)
    }


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis")


register(Format("dicom", "DICOM", is_dicom, None, priority=0))
# PNG is multi-page too: an animated PNG (APNG) is every frame, under the multi-frame rules.
register(Format("png", "PNG", is_png, _pillow_decoder("PNG", "PNG", "png", True), priority=10))
register(Format("jpeg", "JPEG", is_jpeg, _pillow_decoder("JPEG", "JPEG", "jpeg", False), 20))
register(Format("tiff", "TIFF", is_tiff, _pillow_decoder("TIFF", "TIFF", "tiff", True), 30))
register(Format("gif", "GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a"), priority=90))
register(Format("bmp", "BMP", _is_bmp, priority=90))
register(Format("webp", "WebP", _is_webp, priority=90))
register(Format("heif", "HEIF/AVIF", _is_heif, priority=90))
register(Format("jp2", "JPEG 2000", lambda h: h[:12] == _JP2, priority=90))
register(Format("psd", "Photoshop", lambda h: h[:4] == b"8BPS", priority=90))
