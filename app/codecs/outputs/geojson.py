"""``format=geojson``: a FeatureCollection, one Feature per object -- a Polygon (MultiPolygon
when the object has several 4-connected pieces), holes kept, in pixel-corner coordinates
(x right, y down; pixel (x, y) is the square [x, x + 1] x [y, y + 1]) -- with QuPath's
properties, so that File > Import objects opens it over the image."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import colour, objects_of
from app.codecs.outputs.base import OUTLINES, LargeOutput, Model, Options, Output, json_bytes
from app.codecs.polygons import Polygon, polygons
from app.codecs.pyramid import LabelStore
from app.inference.objects import area_and_score
from app.inference.predictor import Prediction


def feature(
    parts: list[Polygon],
    object_id: int,
    classes: list[str],
    class_index: int,
    area: int,
    score: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One object's Feature: its polygons and QuPath's properties (class, colour, area, score)."""
    geometry = (
        {"type": "Polygon", "coordinates": parts[0]}
        if len(parts) == 1
        else {"type": "MultiPolygon", "coordinates": parts}
    )
    properties: dict[str, Any] = {
        "objectType": "detection",
        "id": object_id,
        "classification": {"name": classes[class_index], "color": list(colour(class_index))},
        "measurements": {"area": area, "score": round(score, 6)},
        **(extra or {}),
    }
    return {"type": "Feature", "geometry": geometry, "properties": properties}


class GeoJsonEncoder:
    media_type = "application/geo+json"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        self.model, self.options = model, options
        self.multi = len(image.frames) > 1
        self.features: list[dict[str, Any]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        objects = objects_of(prediction, self.model, self.options)
        area, score = area_and_score(objects, prediction.probabilities)
        shapes = polygons(objects.labels)
        for i in range(1, objects.count + 1):
            properties = {"frame": index} if self.multi else {}
            self.features.append(
                feature(
                    shapes[i],
                    len(self.features) + 1,
                    self.model.card.classes,
                    int(objects.classes[i]),
                    int(area[i]),
                    float(score[i]),
                    properties,
                )
            )

    def finish(self) -> bytes:
        return json_bytes({"type": "FeatureCollection", "features": self.features})


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
