"""What a decoder produces and what it is given: DecodedImage, Limits, Format (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.codecs.errors import ImageTooLargeError


@dataclass(frozen=True)
class DecodedImage:
    """An image as frames of H x W or H x W x C (C in 1..4) uint8/uint16 pixels.

    format: the registry name (``png``, ``jpeg``, ``tiff``, ``dicom``).
    frames: one array per page/frame, all ``height`` x ``width``.
    source: the format's own decoded object when a writer needs it (DICOM dataset).
    pixel_size_um: (row spacing, column spacing) in µm when the input states it (DICOM
        Pixel Spacing, OME-TIFF PhysicalSize, ImageJ's or a centimetre TIFF resolution);
        None otherwise -- a PNG's or JPEG's dpi is a print size, not a physical one.
    """

    format: str
    frames: list[np.ndarray]
    width: int
    height: int
    source: object | None = field(default=None, repr=False)
    pixel_size_um: tuple[float, float] | None = None


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
    """name: registry key; label: for messages; matches(head): the magic-number test;
    media_type and suffixes: of the files of a format the service reads (the OpenAPI
    body's types, the file names a folder contributes), none for one it only names."""

    name: str
    label: str
    matches: Callable[[bytes], bool]
    decode: DecodeFn | None = None
    priority: int = 50
    media_type: str = ""
    suffixes: tuple[str, ...] = ()
