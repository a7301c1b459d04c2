"""``format=geojson``: a FeatureCollection, one Feature per object -- a Polygon (MultiPolygon
when the object has several 4-connected pieces), holes kept, in pixel-corner coordinates
(x right, y down; pixel (x, y) is the square [x, x + 1] x [y, y + 1]) -- with QuPath's
properties, so that File > Import objects opens it over the image."""

from __future__ import annotations

import json
from typing import Any

from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import colour, objects_of
from app.codecs.outputs.base import Model, Options, Output
from app.codecs.polygons import polygons
from app.inference.objects import measure
from app.inference.predictor import Prediction


class GeoJsonEncoder:
    media_type = "application/geo+json"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        self.model, self.options = model, options
        self.multi = len(image.frames) > 1
        self.features: list[dict[str, Any]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        objects = objects_of(prediction, self.model, self.options)
        m = measure(objects, prediction.probabilities)
        shapes = polygons(objects.labels)
        classes = self.model.card.classes
        for i in range(1, objects.count + 1):
            parts = shapes[i]
            geometry = (
                {"type": "Polygon", "coordinates": parts[0]}
                if len(parts) == 1
                else {"type": "MultiPolygon", "coordinates": parts}
            )
            class_index = int(objects.classes[i])
            properties: dict[str, Any] = {
                "objectType": "detection",
                "id": len(self.features) + 1,
                "classification": {
                    "name": classes[class_index],
                    "color": list(colour(class_index)),
                },
                "measurements": {"area": int(m.area[i]), "score": round(float(m.score[i]), 6)},
            }
            if self.multi:
                properties["frame"] = index
            self.features.append(
                {"type": "Feature", "geometry": geometry, "properties": properties}
            )

    def finish(self) -> bytes:
        return json.dumps({"type": "FeatureCollection", "features": self.features}).encode()


OUTPUT = Output(
    "geojson",
    GeoJsonEncoder.media_type,
    "objects as GeoJSON polygons in pixel-corner coordinates (QuPath: Import objects)",
    GeoJsonEncoder,
    multi_frame=True,
    extension="geojson",
)
