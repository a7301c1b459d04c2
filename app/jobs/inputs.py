"""What a job is given, checked before it is queued: where its input is, what it is, how
it will run (block by block or in memory) and how many tiles that takes.

A ``source`` names a file (or an OME-Zarr folder) under UNET_JOB_SOURCE_ROOT;
it is resolved (symlinks followed) and must stay under the root, so ``..``,
absolute paths and symlinks pointing out are refused (SourceRefusedError, 403).
A folder's inner symlinks are checked the same way, at submission and again when
the job starts: a reader opening a chunk follows them. A ``source`` that is a DICOMweb
series URL must lie under one of UNET_JOB_SOURCE_URLS (same scheme, host and port, and
a path under the prefix's): the server fetches nothing else (403).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from app.codecs.errors import FrameCountError, ImageTooLargeError, NotAnImageError
from app.codecs.frames import Limits
from app.codecs.outputs import Options
from app.codecs.slides import lazy_readable, open_slide
from app.errors import SourceNotFoundError, SourceRefusedError, quote
from app.inference.blocks import block_grid
from app.inference.predictor import FLIPS
from app.pipeline.batch import route
from app.pipeline.dicomweb import SeriesUrl
from app.pipeline.resolution import resolve
from app.service import Service

# A file the in-memory decoders read whole may be at most this many bytes per pixel of
# UNET_MAX_IMAGE_PIXELS (16-bit RGB, uncompressed, is 6): a 20 GB PNG is not read.
BYTES_PER_PIXEL = 8


def allowed_series(prefixes: tuple[str, ...], series: SeriesUrl) -> SeriesUrl:
    """``series`` when it lies under one of ``prefixes``; 403 otherwise."""
    given = urlsplit(series.shown)
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        base = allowed.path.rstrip("/") + "/"
        if (given.scheme, given.hostname, given.port) == (
            allowed.scheme, allowed.hostname, allowed.port
        ) and given.path.startswith(base):  # fmt: skip
            return series
    if not prefixes:
        raise SourceRefusedError(
            "jobs may not name a DICOMweb series on this server (UNET_JOB_SOURCE_URLS is unset)"
        )
    raise SourceRefusedError("source is not under a DICOMweb server of UNET_JOB_SOURCE_URLS")


def resolve_source(root: Path | None, source: str) -> Path:
    """The file ``source`` names under ``root``; 403 when it would leave the root (or no
    root is configured), 422 when nothing is there."""
    if root is None:
        raise SourceRefusedError(
            "jobs may not name a source on this server (UNET_JOB_SOURCE_ROOT is unset): "
            "upload the image as the body"
        )
    given = PurePosixPath(source)
    if not source or given.is_absolute() or ".." in given.parts or "\\" in source:
        raise SourceRefusedError(
            "source must be a relative path under UNET_JOB_SOURCE_ROOT, without '..'"
        )
    base = root.resolve()
    try:
        path = (base / given).resolve()  # symlinks followed: where the bytes really are
        if not path.is_relative_to(base):
            raise SourceRefusedError("source leads outside UNET_JOB_SOURCE_ROOT (a symlink?)")
        if not path.exists():
            raise SourceNotFoundError(f"no file {quote(source)} under UNET_JOB_SOURCE_ROOT")
        if path.is_dir():
            check_links(base, path, source)
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long, a loop of symlinks
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid name"
        raise SourceNotFoundError(f"source {quote(source)} names no file: {reason}") from None
    return path


def check_source(root: Path | None, path: Path, source: str) -> None:
    """When a job starts: its source, resolved at submission, must still be under the root
    (the setting may have changed since), a folder's symlinks too (they may have)."""
    base = root.resolve() if root is not None else None
    if base is None or not path.is_relative_to(base):
        raise SourceRefusedError(f"source {quote(source)} is no longer under UNET_JOB_SOURCE_ROOT")
    if path.is_dir():
        check_links(base, path, source)


def check_links(base: Path, folder: Path, source: str) -> None:
    """403 when a symlink anywhere inside ``folder`` (an OME-Zarr store) leads outside
    ``base``, the resolved source root. Linked folders inside the root are walked too
    (each real folder once, so a link to an ancestor cannot loop)."""
    seen: set[str] = set()
    for top, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        for name in (*folders, *files):
            entry = os.path.join(top, name)
            if os.path.islink(entry) and not Path(os.path.realpath(entry)).is_relative_to(base):
                raise SourceRefusedError(
                    f"source {quote(source)} holds a symlink that leads outside "
                    "UNET_JOB_SOURCE_ROOT"
                )


@dataclass(frozen=True)
class Probe:
    """What the input is: its format's route, size, frames, and the tiles it will take."""

    output: str
    large: bool
    width: int
    height: int
    frames: int
    tiles: int


# One in-memory input decoded at a time, however many jobs are submitted at once: its
# pixels (up to UNET_MAX_IMAGE_PIXELS) are the memory a submission costs.
_DECODING = threading.Lock()


def _decode(path: Path, service: Service) -> tuple[int, int, int, str]:
    """(width, height, frames, format) of an image the in-memory decoders read, decoded whole
    (so a corrupt or truncated one is refused now, not failed later) under the
    service's limits: 413 above UNET_MAX_IMAGE_PIXELS or UNET_MAX_FRAMES."""
    settings = service.settings
    largest = BYTES_PER_PIXEL * settings.max_image_pixels
    if path.stat().st_size > largest:
        raise ImageTooLargeError(
            f"{path.name} is {path.stat().st_size} bytes, not a tiled format read a "
            f"rectangle at a time, and above the {largest} bytes of an image of "
            "UNET_MAX_IMAGE_PIXELS: send a tiled TIFF, OME-TIFF or OME-Zarr"
        )
    limits = Limits(settings.max_image_pixels, settings.max_frames)  # no cost limit: jobs wait
    with _DECODING:
        image = service.inputs.decode(path.read_bytes(), limits)
    return image.width, image.height, len(image.frames), image.format


def probe(
    path: Path, output: str | None, options: Options, service: Service, pixel: float | None = None
) -> Probe:
    """``_probe``; an input that cannot be read (permissions, I/O) is 422, not 500."""
    try:
        return _probe(path, output, options, service, pixel)
    except OSError as exc:
        raise SourceNotFoundError(f"{path.name} cannot be read: {exc.strerror}") from None


def _probe(
    path: Path, output: str | None, options: Options, service: Service, pixel: float | None
) -> Probe:
    """Check the input at ``path`` and decide how it runs: 400 not an image, 413 too large
    for an in-memory format, 415 a format not read here, 422 a format of one frame
    for several. pixel: the pixel size the client states (a large image at another than
    the model's is segmented at the model's: its tiles counted there)."""
    if not path.is_file() and not lazy_readable(path):
        raise NotAnImageError(f"{path.name} is not an image file or an OME-Zarr folder")
    settings = service.settings
    name, large = route(
        path, output, settings.max_image_pixels, service.outputs, "UNET_MAX_IMAGE_PIXELS",
        service.model.card, pixel,
    )  # fmt: skip
    planned: tuple[int, ...] | None = None  # the size segmented, when not level 0's
    if lazy_readable(path) and (large or not path.is_file()):
        with open_slide(path) as slide:
            width, height, frames = slide.width, slide.height, 1
            seen = resolve(service.model.card, slide, pixel, path.name, warn=False)
            planned = seen.source.shape[:2]
    else:
        width, height, frames, image_format = _decode(path, service)
        if not large:  # what /segment would answer: 415 or 422 now, not a failed job later
            service.outputs.check_input(name, image_format, frames)
    if large and frames > 1:
        raise FrameCountError(f"the image has {frames} frames; format={name} carries one")
    plan, flips = service.predictor.plan(height, width), FLIPS if options.tta else FLIPS[:1]
    if large:  # block by block: a tile that meets two blocks runs for each
        plan = service.predictor.plan(*(planned or (height, width)))
        return Probe(name, large, width, height, 1, block_grid(plan).tile_count(flips))
    return Probe(name, large, width, height, frames, len(plan) * len(flips) * frames)
