"""``format=geojson``: a FeatureCollection, one Feature per object -- a Polygon (MultiPolygon
when the object has several 4-connected pieces), holes kept, in pixel-corner coordinates
(x right, y down; pixel (x, y) is the square [x, x + 1] x [y, y + 1]) -- with QuPath's
properties, so that File > Import objects opens it over the image."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import colour, objects_of
from app.codecs.outputs.base import OUTLINES, LargeOutput, Options, Output, Provenance, json_bytes
from app.codecs.polygons import Ring, outlines
from app.codecs.pyramid import LabelStore
from app.inference.objects import mean_score
from app.inference.predictor import Prediction


def feature(
    parts: Sequence[Sequence[Ring]],
    object_id: int,
    classes: list[str],
    class_index: int,
    area: int,
    score: float,
    extra: dict[str, Any] | None = None,
    pixel_um2: float | None = None,
) -> dict[str, Any]:
    """One object's Feature: its polygons and QuPath's properties (class, colour, area --
    in µm² too when the pixel's area ``pixel_um2`` is known -- and score)."""
    geometry = (
        {"type": "Polygon", "coordinates": parts[0]}
        if len(parts) == 1
        else {"type": "MultiPolygon", "coordinates": parts}
    )
    properties: dict[str, Any] = {
        "objectType": "detection",
        "id": object_id,
        "classification": {"name": classes[class_index], "color": list(colour(class_index))},
        "measurements": {
            "area": area,
            **({} if pixel_um2 is None else {"area_um2": round(area * pixel_um2, 3)}),
            "score": round(score, 6),
        },
        **(extra or {}),
    }
    return {"type": "Feature", "geometry": geometry, "properties": properties}


class GeoJsonEncoder:
    media_type = "application/geo+json"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.model, self.options = model, options
        self.multi = len(image.frames) > 1
        size = image.pixel_size_um
        self.pixel_um2 = None if size is None else size[0] * size[1]
        self.features: list[bytes] = []  # each Feature's JSON as it is made: no dicts kept

    def add(self, index: int, prediction: Prediction) -> None:
        objects = objects_of(prediction, self.model, self.options)
        shapes = outlines(objects.labels)
        score = mean_score(objects, prediction.probabilities, shapes.area)
        facts = zip(objects.classes.tolist(), shapes.area.tolist(), score.tolist(), strict=True)
        names, extra = self.model.card.classes, {"frame": index} if self.multi else {}
        for i, (class_index, pixels, mean) in enumerate(list(facts)[1:], start=1):  # 0: none
            number = len(self.features) + 1
            item = feature(
                shapes.polygons[i], number, names, class_index, pixels, mean, extra, self.pixel_um2
            )
            self.features.append(json_bytes(item))

    def finish(self) -> bytes:
        return collection(self.features)


HEAD, TAIL = b'{"type":"FeatureCollection","features":[', b"]}"  # around the Features


def collection(features: list[bytes]) -> bytes:
    """A FeatureCollection of the Features' JSON, in one copy of them."""
    if not features:
        return HEAD + TAIL
    ends = [HEAD + features[0], *features[1:]]
    ends[-1] += TAIL
    return b",".join(ends)


OUTPUT = Output(
    "geojson",
    GeoJsonEncoder.media_type,
    "objects as GeoJSON polygons in pixel-corner coordinates (QuPath: Import objects)",
    GeoJsonEncoder,
    multi_frame=True,
    extension="geojson",
)


def finish_large(store: LabelStore, path: Path) -> None:
    """A large image's GeoJSON, written into its store's folder, moved into place."""
    os.replace(store.path / OUTLINES, path)
    shutil.rmtree(store.path)


LARGE = LargeOutput(
    "geojson",
    "the objects of a large image as GeoJSON polygons, written block by block",
    finish_large,
    extension="geojson",
    media_type="application/geo+json",
    content="outlines",
    pyramid=False,
)
