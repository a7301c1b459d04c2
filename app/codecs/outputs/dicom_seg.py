"""``format=dicom-seg``: every frame's mask in one DICOM SEG over the source instance
(DICOM input only; the `dicom` extra)."""

from __future__ import annotations

import numpy as np

from app.codecs.errors import UnsupportedOutputError
from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Model, Options, Output
from app.inference.predictor import Prediction


class DicomSegEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "application/dicom"

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        from pydicom.dataset import Dataset

        from app.codecs.dicom_seg import check_source

        if not isinstance(image.source, Dataset):
            raise UnsupportedOutputError("format=dicom-seg needs a DICOM input")
        check_source(image.source)  # 422 before any inference (e.g. no plane positions)
        self.source, self.card = image.source, model.card
        self.masks: list[np.ndarray] = []

    def add(self, index: int, prediction: Prediction) -> None:
        self.masks.append(prediction.mask)

    def finish(self) -> bytes:
        from app.codecs.dicom_seg import encode_seg

        card = self.card
        return encode_seg(self.source, self.masks, card.classes, card.name, card.version)


OUTPUT = Output(
    "dicom-seg",
    DicomSegEncoder.media_type,
    "a DICOM Segmentation referencing the source instance",
    DicomSegEncoder,
    multi_frame=True,
    inputs=frozenset({"dicom"}),
)
