"""``format=overlay``: for people, not programs -- the input as an RGB PNG with each class
filled in its colour (half transparent), or with ``objects=true`` each object's outline in
a colour of its own; same size as the input, one frame."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.codecs.encode import PNG_COMPRESS_LEVEL, palette
from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import colour, objects_of
from app.codecs.outputs.base import Options, Output, Provenance
from app.inference.predictor import Prediction

ALPHA = 0.45  # how much of a class colour covers the image


def as_rgb(frame: np.ndarray) -> npt.NDArray[np.uint8]:
    """H x W (x C) uint8/uint16 -> H x W x 3 uint8 (16 bits scaled, gray replicated,
    alpha dropped)."""
    pixels = frame if frame.dtype == np.uint8 else (frame // 257).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] < 3:
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def outlines(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """Pixels of an object with a 4-neighbour outside it (or past the image border)."""
    p = np.pad(labels, 1, constant_values=-1)
    inner = p[1:-1, 1:-1]
    edge = (inner != p[:-2, 1:-1]) | (inner != p[2:, 1:-1])
    edge |= (inner != p[1:-1, :-2]) | (inner != p[1:-1, 2:])
    result: npt.NDArray[np.bool_] = edge & (inner > 0)
    return result


class OverlayEncoder:
    media_type = "image/png"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.image, self.model, self.options = image, model, options
        self.body = b""

    def add(self, index: int, prediction: Prediction) -> None:
        picture = as_rgb(self.image.frames[index]).astype(np.float32)
        if self.options.outline_objects:
            objects = objects_of(prediction, self.model, self.options)
            colours = np.array([(0, 0, 0), *(colour(i) for i in range(1, objects.count + 1))])
            edge = outlines(objects.labels)
            picture[edge] = colours[objects.labels[edge]]
        else:
            colours = np.array(palette(len(self.model.card.classes)), dtype=np.float32).reshape(
                -1, 3
            )
            fill = prediction.mask > 0
            tint = colours[prediction.mask[fill]]
            picture[fill] = (1 - ALPHA) * picture[fill] + ALPHA * tint
        buffer = io.BytesIO()
        Image.fromarray(np.rint(picture).astype(np.uint8)).save(
            buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        self.body = buffer.getvalue()

    def finish(self) -> bytes:
        return self.body


OUTPUT = Output(
    "overlay",
    "image/png",
    "the input with classes or object outlines drawn, RGB PNG",
    OverlayEncoder,
    extension="overlay.png",
)
