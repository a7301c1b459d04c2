"""``format=objects``: the object table as JSON -- id, class, area, bbox, centroid, score and
COCO RLE per object; ``frame`` per object for multi-frame input (ids run over all frames)."""

from __future__ import annotations

from typing import Any

from app.codecs.images import DecodedImage
from app.codecs.masks import object_rles
from app.codecs.outputs._objects import objects_of
from app.codecs.outputs.base import Model, Options, Output, json_bytes, json_header
from app.inference.objects import measure
from app.inference.predictor import Prediction
from app.inference.runs import vertical_runs


def object_rows(
    prediction: Prediction, model: Model, options: Options, first_id: int, frame: int | None
) -> list[dict[str, Any]]:
    """One JSON-ready row per object of a frame, ids from ``first_id``."""
    objects = objects_of(prediction, model, options)
    runs = vertical_runs(objects.labels, objects.count)
    m = measure(objects, prediction.probabilities, runs)
    rles = object_rles(runs, objects.count)
    names = model.card.classes
    classes, area = objects.classes.tolist(), m.area.tolist()  # Python numbers at once
    bbox, centroid, score = m.bbox.tolist(), m.centroid.tolist(), m.score.tolist()
    rows = []
    for i in range(1, objects.count + 1):
        row: dict[str, Any] = {} if frame is None else {"frame": frame}
        row |= {
            "id": first_id + i - 1,
            "class_index": classes[i],
            "label": names[classes[i]],
            "area": area[i],
            "bbox": bbox[i],
            "centroid": [round(v, 3) for v in centroid[i]],
            "score": round(score[i], 6),
            "rle": rles[i - 1],
        }
        rows.append(row)
    return rows


class ObjectsEncoder:
    media_type = "application/json"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        self.model, self.options = model, options
        self.multi = len(image.frames) > 1
        self.document = json_header(image, model)
        self.rows: list[dict[str, Any]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi else None
        self.rows += object_rows(prediction, self.model, self.options, len(self.rows) + 1, frame)

    def finish(self) -> bytes:
        return json_bytes({**self.document, "objects": self.rows})


OUTPUT = Output(
    "objects",
    ObjectsEncoder.media_type,
    "the object table (JSON): id, class, area, bbox, centroid, score, COCO RLE",
    ObjectsEncoder,
    multi_frame=True,
    extension="objects.json",
)
