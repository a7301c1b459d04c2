"""``format=dicom-sr``: a Comprehensive 3D SR (TID 1500) measuring each segment of the SEG
that ``format=dicom-seg`` returns for the same input, which it references by that SEG's
UIDs (app/codecs/dicom_sr.py): volumes in mm³, or areas in mm² for a single frame."""

from __future__ import annotations

from app.codecs.images import DecodedImage
from app.codecs.outputs.base import Model, Options, Output
from app.codecs.outputs.dicom_seg import DicomSegEncoder


class DicomSrEncoder(DicomSegEncoder):
    format = "dicom-sr"

    def __init__(self, image: DecodedImage, model: Model, options: Options) -> None:
        from app.codecs.dicom_sr import geometry

        super().__init__(image, model, options)
        geometry(self.sources)  # 422 before any inference: no spacing, no volume

    def finish(self) -> bytes:
        from app.codecs.dicom_sr import encode_sr

        card, sha = self.model.card, self.model.sha256
        return encode_sr(self.sources, self.masks, card.classes, card.name, card.version, sha)


OUTPUT = Output(
    "dicom-sr",
    DicomSrEncoder.media_type,
    "a DICOM SR (TID 1500): each segment's volume in mm³ (area in mm² for one frame), "
    "referencing the SEG of format=dicom-seg",
    DicomSrEncoder,
    multi_frame=True,
    inputs=frozenset({"dicom"}),
    extension="sr.dcm",
)
