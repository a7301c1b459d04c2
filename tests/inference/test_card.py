"""ModelCard: embedded metadata, sidecar, inference from the graph, clear errors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest

from app.inference import ModelCardError, ModelLoadError, load_model
from app.inference.card import parse_card
from tests.inference.conftest import VALID
from tests.nets import SOFTMAX3, default_card


def test_embedded_card_loads(valid_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = load_model(valid_model, "cpu")
    card = loaded.card
    assert loaded.card_source == "embedded"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert card.name == "valid"
    assert (card.padding, card.halo, card.size_multiple, card.size_offset) == ("valid", 92, 16, 12)
    assert card.min_size == 188
    assert card.out_channels == 1


def test_extra_fields_are_kept(valid_model: Path, tmp_path: Path) -> None:
    card = default_card(VALID, name="extra", validation={"dice": 0.9})
    path = write_with_card(valid_model, tmp_path / "extra.onnx", card)
    assert load_model(path, "cpu").card.model_extra == {"validation": {"dice": 0.9}}


def test_a_model_without_card_loads_with_a_sidecar(bare_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "users_net.onnx"
    shutil.copy(bare_model, path)
    sidecar = default_card(VALID, name="users-net", classes=["background", "nucleus"])
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    card = load_model(path, "cpu").card
    assert (card.name, card.classes) == ("users-net", ["background", "nucleus"])


def test_the_sidecar_wins_over_embedded_metadata(valid_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    shutil.copy(valid_model, path)
    path.with_suffix(".json").write_text(json.dumps(default_card(VALID, name="from-sidecar")))
    loaded = load_model(path, "cpu")
    assert (loaded.card.name, loaded.card_source) == ("from-sidecar", "sidecar")


def test_without_card_or_sidecar_the_geometry_is_inferred(
    bare_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.inference.card"):
        loaded = load_model(bare_model, "cpu")
    card = loaded.card
    assert loaded.card_source == "inferred"
    # One WARNING that names every assumption and how to write the sidecar (API.md).
    (record,) = [r for r in caplog.records if r.name == "app.inference.card"]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    for assumed in (
        "padding=valid",
        "halo=92",
        "sizes 16k+12 >= 188",
        "normalization scale=0.00392157 offset=0",
        "activation=sigmoid",
        "1 input channel",
        "classes background,foreground",
        f"{bare_model.stem}.json beside the model",
    ):
        assert assumed in line, (assumed, line)
    assert (card.padding, card.halo, card.size_multiple, card.size_offset, card.min_size) == (
        "valid",
        92,
        16,
        12,
        188,
    )
    assert card.classes == ["background", "foreground"]
    assert card.activation == "sigmoid"


def test_inferred_softmax_same_model(tmp_path: Path) -> None:
    from tests.nets import UNetSpec, build_onnx, random_weights

    spec = UNetSpec(depth=3, base=2, out_channels=3, padding="same")
    path = tmp_path / "same3.onnx"
    onnx.save(build_onnx(spec, random_weights(spec), card=None), str(path))
    card = load_model(path, "cpu").card
    assert (card.padding, card.size_multiple, card.activation) == ("same", 8, "softmax")
    assert len(card.classes) == 3


def write_with_card(source: Path, target: Path, card: dict[str, object]) -> Path:
    model = onnx.load(str(source))
    onnx.helper.set_model_props(model, {"unet": json.dumps(card)})
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"halo": 90}, "does not match the network"),
        ({"padding": "same", "halo": 0, "size_offset": 0, "min_size": 16}, "does not match"),
        ({"in_channels": 3}, "in_channels"),
        ({"classes": ["bg", "a", "b"]}, "sigmoid model has exactly 2 classes"),
        ({"activation": "softmax"}, "K=2"),
        ({"size_offset": 20}, "size_offset"),
        ({"normalization": {"scale": [1, 2], "offset": 0}}, "normalization.scale has 2 values"),
        ({"padding": "diagonal"}, "field 'padding'"),
        ({"name": ""}, "field 'name'"),
        ({"classes": None}, "field 'classes'"),
    ],
)
def test_bad_cards_name_the_field(
    valid_model: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    card = {**default_card(VALID, name="bad"), **change}
    path = write_with_card(valid_model, tmp_path / "bad.onnx", card)
    with pytest.raises(ModelCardError, match=message):
        load_model(path, "cpu")


def test_missing_field_is_named() -> None:
    card = default_card(VALID)
    del card["activation"]
    with pytest.raises(ModelCardError, match="field 'activation': Field required"):
        parse_card(card, "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        ('{"name": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),  # saved by a Windows editor
        (b"[" * 100_000 + b"]" * 100_000, "not a card: nested too deeply"),
    ],
)
def test_a_sidecar_that_is_not_json_is_named(
    valid_model: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "m.onnx"
    shutil.copy(valid_model, path)
    path.with_suffix(".json").write_bytes(content)
    with pytest.raises(ModelCardError, match=rf"sidecar m\.json: {message}"):
        load_model(path, "cpu")


def test_a_sidecar_saved_with_a_byte_order_mark_reads(valid_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    shutil.copy(valid_model, path)
    card = default_card(VALID)
    path.with_suffix(".json").write_bytes(b"\xef\xbb\xbf" + json.dumps(card).encode())
    assert load_model(path, "cpu").card.name == card["name"]


def test_softmax_model_card(softmax3_model: Path) -> None:
    card = load_model(softmax3_model, "cpu").card
    assert card.out_channels == 3 == len(card.classes)
    assert card.geometry().halo == SOFTMAX3.halo


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot load model"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "cannot load model"),
        (b"garbage" * 100, "cannot load model"),
    ],
)
def test_corrupt_or_non_onnx_files_give_one_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path, "cpu")
    assert "\n" not in str(info.value)


def test_truncated_onnx_file(valid_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(valid_model.read_bytes()[:2000])
    with pytest.raises(ModelLoadError, match=r"truncated\.onnx"):
        load_model(path, "cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_model(tmp_path / "nope.onnx", "cpu")


def test_a_graph_that_is_not_a_segmentation_network(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    path = tmp_path / "vector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelLoadError, match="expected one N x C x H x W input"):
        load_model(path, "cpu")
