"""``format=objects``: the object table as JSON -- id, class, area, bbox, centroid, score and
COCO RLE per object; ``frame`` per object for multi-frame input (ids run over all frames).

When the input states its pixel size (``DecodedImage.pixel_size_um``): ``pixel_size_um``
[row, column] beside the size, ``area_um2`` per object, and for a DICOM volume (several
frames with positions) ``volume_mm3`` per class, measured as format=dicom-sr measures it."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.codecs.encode import object_rles
from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import objects_of
from app.codecs.outputs.base import Options, Output, Provenance, json_bytes, json_header
from app.inference.objects import measure
from app.inference.predictor import Prediction
from app.inference.runs import vertical_runs


def object_rows(
    prediction: Prediction,
    model: Provenance,
    options: Options,
    first_id: int,
    frame: int | None,
    pixel_um2: float | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready row per object of a frame, ids from ``first_id``; ``area_um2`` too when
    the pixel's area in µm² (``pixel_um2``) is known."""
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
            **({} if pixel_um2 is None else {"area_um2": round(area[i] * pixel_um2, 3)}),
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

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.model, self.options = model, options
        self.multi = len(image.frames) > 1
        self.document = json_header(image, model)
        self.pixel_um2 = physical(image, self.document)
        self.volume = Volume(image, len(model.card.classes))
        self.rows: list[dict[str, Any]] = []

    def add(self, index: int, prediction: Prediction) -> None:
        frame = index if self.multi else None
        first = len(self.rows) + 1
        self.rows += object_rows(prediction, self.model, self.options, first, frame, self.pixel_um2)
        self.volume.add(prediction.mask)

    def finish(self) -> bytes:
        volumes = self.volume.mm3(self.model.card.classes)
        extra = {} if volumes is None else {"volume_mm3": volumes}
        return json_bytes({**self.document, **extra, "objects": self.rows})


def physical(image: DecodedImage, document: dict[str, Any]) -> float | None:
    """The pixel's area in µm² when the input states its size (None otherwise), and
    ``pixel_size_um`` in ``document``."""
    if image.pixel_size_um is None:
        return None
    document["pixel_size_um"] = [round(v, 6) for v in image.pixel_size_um]
    return image.pixel_size_um[0] * image.pixel_size_um[1]


class Volume:
    """Each class's pixels per frame of a DICOM volume, for its volume in mm³ (frames' extents
    along the slice normal, as format=dicom-sr); nothing for other inputs."""

    def __init__(self, image: DecodedImage, classes: int) -> None:
        self.sources: list[Any] | None = None
        if image.format == "dicom" and len(image.frames) > 1:
            from app.codecs.dicom_series import Series  # pydicom: for DICOM input only

            source = image.source  # a series, or an enhanced multi-frame instance
            self.sources = source.datasets if isinstance(source, Series) else [source]
        self.classes, self.counts = classes, list[np.ndarray]()

    def add(self, mask: np.ndarray) -> None:
        if self.sources is not None:
            self.counts.append(np.bincount(mask.ravel(), minlength=self.classes))

    def mm3(self, names: list[str]) -> dict[str, float] | None:
        from app.codecs.dicom_geometry import volumes
        from app.codecs.errors import DicomSegError

        if self.sources is None:
            return None
        try:
            by_class = volumes(self.sources, np.array(self.counts))
        except DicomSegError:  # no positions or spacing stated: no volume, the objects stand
            return None
        return {names[c]: round(float(by_class[c]), 3) for c in range(1, self.classes)}


OUTPUT = Output(
    "objects",
    ObjectsEncoder.media_type,
    "the object table (JSON): id, class, area, bbox, centroid, score, COCO RLE",
    ObjectsEncoder,
    multi_frame=True,
    extension="objects.json",
)
