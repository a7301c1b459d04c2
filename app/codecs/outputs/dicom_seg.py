"""``format=dicom-seg``: every frame's mask in one DICOM SEG over the source instance, or
over every instance of a series sent together (DICOM input only; the `dicom` extra).
The SEG's UIDs derive from the source series and the model (app/codecs/dicom_seg.py)."""

from __future__ import annotations

import numpy as np

from app.codecs.errors import UnsupportedOutputError
from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Options, Output, Provenance
from app.inference.predictor import Prediction


class DicomSegEncoder:
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only
    media_type = "application/dicom"
    format = "dicom-seg"
    masks_only = True  # its answer is made of the masks alone: a recalled mask will do

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        from pydicom.dataset import Dataset

        from app.codecs.dicom_seg import check_source
        from app.codecs.dicom_series import Series

        source = image.source
        if isinstance(source, Series):  # several instances of one series: one SEG
            self.sources: list[Dataset] = source.datasets
        elif isinstance(source, Dataset):
            self.sources = [source]
        else:
            raise UnsupportedOutputError(f"format={self.format} needs a DICOM input")
        for dataset in self.sources:
            check_source(dataset)  # 422 before any inference (e.g. no plane positions)
        self.model = model
        self.masks: list[np.ndarray] = []

    def add(self, index: int, prediction: Prediction) -> None:
        self.masks.append(prediction.mask)

    def finish(self) -> bytes:
        from app.codecs.dicom_seg import encode_seg

        card, sha = self.model.card, self.model.sha256
        return encode_seg(self.sources, self.masks, card.classes, card.name, card.version, sha)


OUTPUT = Output(
    "dicom-seg",
    DicomSegEncoder.media_type,
    "a DICOM Segmentation referencing the source instance",
    DicomSegEncoder,
    multi_frame=True,
    inputs=frozenset({"dicom"}),
    extension="seg.dcm",
)
