"""PNG, JPEG and TIFF through Pillow: pages -> frames, limits checked from the headers.

Pixels stay on their stored grid (EXIF orientation is not applied) and in their
stored depth: 16-bit PNG/TIFF stay uint16. Palette images are expanded, alpha kept;
an animated PNG and a multi-page TIFF are several frames of one size.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import tifffile
from PIL import Image, ImageFile, UnidentifiedImageError

from app.codecs.errors import CorruptImageError, UnsupportedFormatError
from app.codecs.frames import DecodedImage, DecodeFn, Limits
from app.codecs.pixel_size import tags_pixel_size_um

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
        layout = _tiff_layout(data) if pil_format == "TIFF" else None
        if layout is not None:  # a sound TIFF whose pixels Pillow has no mode for
            raise UnsupportedFormatError(
                f"{label}: {layout} is not supported; send 8- or 16-bit gray, RGB or RGBA"
            ) from None
        raise CorruptImageError(
            f"{label} signature, but the header is corrupt or truncated ({len(data)} bytes)"
        ) from None
    except _PIL_ERRORS as exc:
        raise CorruptImageError(f"{label} header is corrupt or truncated: {exc}") from None


def _tiff_layout(data: bytes) -> str | None:
    """The first page's sample layout when tifffile reads its header, else None."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            samples, bits = page.samplesperpixel, page.bitspersample
            kind = str(getattr(page.photometric, "name", page.photometric)).lower()
            number = {1: "unsigned", 2: "signed", 3: "float"}.get(int(page.sampleformat), "")
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, OSError, struct.error):
        return None
    return f"{samples} samples per pixel of {bits}-bit {number or 'other'} numbers ({kind})"


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


def tiff_pixel_size_um(im: Image.Image) -> tuple[float, float] | None:
    """(row, column) spacing in µm that a TIFF read by Pillow states (app/codecs/pixel_size.py)."""
    return tags_pixel_size_um(getattr(im, "tag_v2", {}))


PixelSizeFn = Callable[[Image.Image], "tuple[float, float] | None"]


def pillow_decoder(
    pil_format: str, label: str, name: str, multipage: bool, pixel_size: PixelSizeFn | None = None
) -> DecodeFn:
    def decode_with_pillow(data: bytes, limits: Limits) -> DecodedImage:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                with _open(data, pil_format, label) as im:
                    width, height = im.size
                    limits.check(width, height, 1, label)
                    size = pixel_size(im) if pixel_size is not None else None
                    pages = _page_count(im, limits, label) if multipage else 1
                    frames = [_page(im, page, label) for page in range(pages)]
        except _PIL_ERRORS as exc:
            raise CorruptImageError(f"{label} data is corrupt or truncated: {exc}") from None
        return DecodedImage(name, frames, width, height, pixel_size_um=size)

    return decode_with_pillow
