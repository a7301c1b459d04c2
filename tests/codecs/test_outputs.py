"""The outputs registry: one list of formats, encoders built without the HTTP service."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from app.codecs.errors import FrameCountError, OptionError, UnsupportedOutputError
from app.codecs.images import DecodedImage
from app.codecs.outputs import Options, Output, Outputs, Provenance, default_outputs
from app.codecs.outputs.geojson import collection
from app.inference import Prediction, load_model
from app.inference.objects import class_probability
from tests.nets import UNetSpec, default_card, save_model

PROBS = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)


def image(frames: int = 1, fmt: str = "png") -> DecodedImage:
    return DecodedImage(fmt, [np.zeros((4, 5), np.uint8)] * frames, 5, 4)


@pytest.fixture(scope="module")
def softmax(tmp_path_factory: pytest.TempPathFactory) -> Provenance:
    spec = UNetSpec(depth=2, base=2, out_channels=3)
    path = tmp_path_factory.mktemp("outputs") / "softmax3.onnx"
    save_model(path, spec, seed=3, card=default_card(spec, name="softmax3"))
    loaded = load_model(path, "cpu", threads=1)
    return Provenance.of(loaded)


def test_the_installations_formats_in_order() -> None:
    names = ["png", "rle", "probability", "overlay", "instances", "objects", "geojson"]
    assert default_outputs().names() == [*names, "dicom-seg", "dicom-sr"]


def test_class_probability_is_the_class_channel() -> None:
    assert np.array_equal(class_probability(PROBS, 2), PROBS[2])
    assert np.array_equal(class_probability(PROBS[:1], 1), PROBS[0])  # sigmoid: p(class 1)
    np.testing.assert_allclose(class_probability(PROBS[:1], 0), 1 - PROBS[0])


@pytest.mark.parametrize("class_index", [0, 3, 7])
def test_probability_checks_class_once_naming_the_classes(
    softmax: Provenance, class_index: int
) -> None:
    with pytest.raises(
        OptionError, match=rf"1\.\.2 \(1 = class_1, 2 = class_2\), got {class_index}"
    ):
        default_outputs().encoder("probability", image(), softmax, Options(class_index=class_index))


def test_probability_answers_the_chosen_class(softmax: Provenance) -> None:
    encoder = default_outputs().encoder("probability", image(), softmax, Options(class_index=1))
    encoder.add(0, Prediction(PROBS, PROBS.argmax(axis=0).astype(np.uint8), 1))
    decoded = np.asarray(Image.open(io.BytesIO(encoder.finish())))
    np.testing.assert_array_equal(decoded, np.round(PROBS[1] * 65535).astype(np.uint16))


def test_refusals_name_the_formats_from_the_registry(softmax: Provenance) -> None:
    outputs = default_outputs()
    with pytest.raises(
        UnsupportedOutputError, match=r"use format=png, rle, .*, objects or geojson$"
    ):
        outputs.encoder("dicom-seg", image(), softmax, Options())
    with pytest.raises(
        FrameCountError,
        match=r"2 frames and format=png carries one; use format=rle, objects or geojson$",
    ):
        outputs.encoder("png", image(2, "tiff"), softmax, Options())
    with pytest.raises(
        FrameCountError, match=r"use format=rle, objects, geojson, dicom-seg or dicom-sr$"
    ):
        outputs.encoder("probability", image(2, "dicom"), softmax, Options())


class Shape:
    """A toy format: the mask's shape as text."""

    media_type = "text/plain"
    headers: dict[str, str] = {}  # noqa: RUF012 -- read only

    def __init__(self, image: DecodedImage, model: Provenance, options: Options) -> None:
        self.text = ""

    def add(self, index: int, prediction: Prediction) -> None:
        self.text += f"{index}:{prediction.mask.shape}\n"

    def finish(self) -> bytes:
        return self.text.encode()


TOY = Output("shape", "text/plain", "the mask's shape", Shape, multi_frame=True)


def test_a_new_format_takes_part_in_every_message(softmax: Provenance) -> None:
    outputs = Outputs([*default_outputs(), TOY])
    assert outputs.names()[-1] == "shape"
    with pytest.raises(FrameCountError, match=r"use format=rle, objects, geojson or shape$"):
        outputs.encoder("png", image(2, "tiff"), softmax, Options())
    with pytest.raises(ValueError, match="registered already"):
        outputs.add(TOY)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_feature_collection_is_its_features_joined(count: int) -> None:
    features = [{"type": "Feature", "id": i, "geometry": None} for i in range(count)]
    joined = collection([json.dumps(f, separators=(",", ":")).encode() for f in features])
    assert json.loads(joined) == {"type": "FeatureCollection", "features": features}
