"""What a batch of files runs on each input: the service's in-memory pipeline (``Small``),
or the block-by-block path of images beyond memory (``Large``), with what they share
(``Context``, app/pipeline/context.py). Used by the command line here, by jobs and by
Dask workers (app/pipeline/dask.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.codecs.errors import CodecError, FrameCountError, ImageTooLargeError
from app.codecs.images import DecodedImage
from app.codecs.outputs import LARGE_OUTPUTS, Outputs
from app.codecs.outputs.base import either
from app.codecs.slides import is_tiff_file, lazy_readable, open_slide
from app.inference.card import ModelCard
from app.inference.predictor import check_frame
from app.inference.tiler import ProgressFn, Region
from app.pipeline.blocks import Blocks
from app.pipeline.context import Context
from app.pipeline.large import segment_large
from app.pipeline.objects import Mapper, local_map
from app.pipeline.resolution import resolve
from app.pipeline.small import segment_image

log = logging.getLogger(__name__)


def slide_pixels(
    source: Path, card: ModelCard | None = None, stated: float | None = None
) -> tuple[int, bool] | None:
    """(width x height, whether it is segmented at another pixel size -- the model's, by
    ``card``, from the file's or the ``stated`` one) of a file a lazy reader takes, else
    None (decoded in memory)."""
    if not lazy_readable(source):
        return None
    try:
        with open_slide(source) as slide:
            if card is None:
                return slide.width * slide.height, False
            seen = resolve(card, slide, stated, source.name, warn=False)
            return slide.width * slide.height, seen.shape is not None
    except CodecError:
        if is_tiff_file(source):  # pages, say: the in-memory decoders may read it
            return None
        raise


def route(
    source: Path,
    name: str | None,
    max_pixels: int,
    outputs: Outputs,
    limit: str,
    card: ModelCard | None = None,
    stated: float | None = None,
) -> tuple[str, bool]:
    """(format, whether ``source`` goes the large way, block by block): format ``name``,
    else ``png`` up to ``max_pixels`` and ``ome-zarr`` above; a format that has both
    forms (``instances``, ``geojson``) takes the large one above ``max_pixels``.
    ImageTooLargeError for an in-memory-only format above ``max_pixels`` (named
    ``limit`` in its message). An image to be resampled to the pixel size of the model
    of ``card`` (``stated``: the input's, over the file's) goes the large way, the only
    one that resamples, whatever its size: by default to ``ome-zarr``; an in-memory-only
    format is made at the file's own pixel size, with a WARNING."""
    pixels, resampled = slide_pixels(source, card, stated) or (None, False)
    big = pixels is not None and pixels > max_pixels
    if name is None:
        return ("ome-zarr", True) if big or resampled else ("png", False)
    if name not in outputs:
        return name, True
    if big and name not in LARGE_OUTPUTS:
        large = either(list(LARGE_OUTPUTS))
        raise ImageTooLargeError(
            f"{source.name} has {pixels} pixels, above {limit} {max_pixels}; "
            f"format={name} holds images up to that: use format={large}"
        )
    if resampled and name not in LARGE_OUTPUTS:
        log.warning(
            "%s is not at the model's pixel size; format=%s does not resample, so it is "
            "segmented as it is: use format=%s",
            source.name, name, either(list(LARGE_OUTPUTS)),
        )  # fmt: skip
    return name, big or (resampled and name in LARGE_OUTPUTS)


class Small:
    """The service's pipeline in this process: decode -> predict every frame -> encode."""

    def __init__(self, context: Context, outputs: Outputs, output: str) -> None:
        self.context, self.outputs, self.output = context, outputs, output

    def decode(self, source: Path) -> DecodedImage:
        """The input's frames: its bytes through the service's decoders, or, for what only
        a lazy reader opens (OME-Zarr, OpenSlide formats), its one plane read whole."""
        c = self.context
        if not lazy_readable(source) or is_tiff_file(source):
            return c.decoders.decode(source.read_bytes(), c.limits)
        with open_slide(source) as slide:
            c.limits.check(slide.width, slide.height, 1, slide.format)
            frame = np.asarray(slide[slice(0, slide.height), slice(0, slide.width)])
        return DecodedImage(slide.format, [frame[:, :, 0] if frame.shape[2] == 1 else frame],
                            slide.width, slide.height)  # fmt: skip

    def __call__(
        self, source: Path, progress: ProgressFn | None = None
    ) -> tuple[bytes, str, dict[str, Any]]:
        """(body, media type, facts); progress: tiles done of each frame."""
        c = self.context
        image = self.decode(source)
        encoder, _ = segment_image(
            image, self.output, self.outputs, c.model, c.options, c.predictor, progress
        )
        size = {"width": image.width, "height": image.height, "frames": len(image.frames)}
        return encoder.finish(), encoder.media_type, size


class Large:
    """An image of any size, block by block, into a format of LARGE_OUTPUTS.

    A TIFF, OME-Zarr or OpenSlide file is read lazily (a rectangle at a time);
    any other image the service reads is decoded in memory first (one frame).
    blocks / mapper: where the blocks and the object passes run (None: here).
    """

    def __init__(
        self,
        context: Context,
        output: str,
        blocks: Blocks | None = None,
        mapper: Mapper | None = None,
    ) -> None:
        self.context, self.output = context, LARGE_OUTPUTS[output]
        self.blocks, self.mapper = blocks, mapper

    def image(self, source: Path) -> Region:
        c = self.context
        if lazy_readable(source):
            return open_slide(source)
        decoded = c.decoders.decode(source.read_bytes(), c.limits)
        if len(decoded.frames) > 1:
            raise FrameCountError(
                f"{source.name} has {len(decoded.frames)} frames; "
                f"format={self.output.name} carries one"
            )
        return check_frame(decoded.frames[0])

    def __call__(
        self,
        source: Path,
        path: Path,
        progress: Callable[[str, int, int], None],
        resume: Path | None = None,
    ) -> dict[str, Any]:
        """Write ``path``; facts for a summary. progress(stage, done, total): segment_large's;
        resume: segment_large's folder to go on from (app/pipeline/resume.py)."""
        c = self.context
        image = self.image(source)
        try:
            seen = resolve(c.model.card, image, c.pixel_size, source.name)
            result = segment_large(
                seen.source, path, self.output, c.predictor, c.model, c.options,
                blocks=self.blocks, mapper=self.mapper or local_map,
                probability=c.probability, progress=progress,
                skip_background=c.skip_background, shape=seen.shape, pixel_size=seen.size,
                resume=resume,
            )  # fmt: skip
        finally:
            close = getattr(image, "close", None)
            if close is not None:
                close()
        facts: dict[str, Any] = {"width": result.width, "height": result.height, "frames": 1,
                 "tiles": result.tiles, "levels": result.levels}  # fmt: skip
        if result.skipped is not None:
            facts["background_skipped"] = result.skipped
        if seen.size is not None:
            facts["pixel_size_um"] = [round(s, 6) for s in seen.size]
        if seen.shape is not None:
            facts["segmented_at"] = list(seen.source.shape[:2])
        return facts if result.objects is None else facts | {"objects": result.objects}
