"""``format=dicom-sr``: a Comprehensive 3D SR (TID 1500) measuring each segment of the SEG
that ``format=dicom-seg`` returns for the same input, which it references by that SEG's
UIDs (app/codecs/dicom_sr.py): volumes in mm³, or areas in mm² for a single frame; for an
object model (its card states ``objects``), each segment's number of objects.

Objects are counted as format=objects finds them: with the ``components`` recipe, the
connected components of a segment through the slices (face-connected, ``min_area`` in
voxels); with ``watershed`` (a per-frame recipe), in a single frame only, and never for the
boundary class -- a volume gets no count rather than a sum of slices."""

from __future__ import annotations

import numpy as np

from app.codecs.images import DecodedImage
from app.codecs.outputs._objects import objects_of, recipe
from app.codecs.outputs.base import Options, Output, Provenance
from app.codecs.outputs.dicom_seg import DicomSegEncoder
from app.inference.predictor import Prediction


class DicomSrEncoder(DicomSegEncoder):
    format = "dicom-sr"

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        from app.codecs.dicom_geometry import geometry

        super().__init__(image, model, options)
        self.along, _ = geometry(self.sources)  # 422 before any inference: no spacing, no volume
        self.recipe = recipe(model, options) if "objects" in model.card.model_fields_set else None
        self.options = options
        self.frame_counts: dict[int, int] | None = None  # watershed, one frame
        self.masks_only = not self._watershed_frame()

    def _watershed_frame(self) -> bool:
        """Whether it counts a watershed's objects in one frame: it needs probabilities."""
        return (
            self.recipe is not None and self.recipe.method == "watershed" and len(self.along) == 1
        )

    def add(self, index: int, prediction: Prediction) -> None:
        super().add(index, prediction)
        if self.recipe is not None and self._watershed_frame():
            objects = objects_of(prediction, self.model, self.options)
            per_class = np.bincount(objects.classes[1:], minlength=len(self.model.card.classes))
            boundary = self.recipe.boundary_class
            self.frame_counts = {
                c: int(per_class[c]) for c in range(1, len(per_class)) if c != boundary
            }

    def counts(self) -> dict[int, int] | None:
        from app.codecs.dicom_sr import component_counts

        if self.recipe is None:
            return None
        if self.recipe.method == "components":
            classes = self.model.card.classes
            return component_counts(self.along, self.masks, classes, self.recipe.min_area)
        return self.frame_counts

    def finish(self) -> bytes:
        from app.codecs.dicom_sr import encode_sr

        card, sha = self.model.card, self.model.sha256
        return encode_sr(
            self.sources, self.masks, card.classes, card.name, card.version, sha, self.counts()
        )


OUTPUT = Output(
    "dicom-sr",
    DicomSrEncoder.media_type,
    "a DICOM SR (TID 1500): each segment's volume in mm³ (area in mm² for one frame) and, "
    "for object models, its number of objects; referencing the SEG of format=dicom-seg",
    DicomSrEncoder,
    multi_frame=True,
    inputs=frozenset({"dicom"}),
    extension="sr.dcm",
)
