"""Folders -> samples -> tiles: pairing, TIFF, label modes, the split, valid-size crops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.augment import Augment
from training.data import (
    TileDataset,
    find_pairs,
    load_samples,
    normalization_stats,
    read_image,
    split_names,
)


def test_one_name_in_two_formats_is_an_error(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    shapes(tmp_path, 3, suffix=".png")
    shapes(tmp_path, 2, seed=5, suffix=".tif")  # 0.tif, 1.tif: clash with 0.png
    with pytest.raises(ValueError, match="two files named 0"):
        find_pairs(tmp_path)


def test_tiff_and_16_bit(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    image = (np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "image" / "a.tif")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "label" / "a.tiff")
    assert read_image(tmp_path / "image" / "a.tif").dtype == np.uint16
    (sample,) = load_samples(tmp_path)
    assert sample.image.shape == (64, 64, 1)
    assert sample.label.all()


def test_missing_label_is_named(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    shapes(tmp_path, 3)
    (tmp_path / "label" / "2.png").unlink()
    with pytest.raises(ValueError, match=r"have no label .*\['2'\]"):
        find_pairs(tmp_path)


def test_binary_foreground_flag_and_multiclass(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    shapes(tmp_path, 2)
    white = load_samples(tmp_path, foreground_value=255)
    black = load_samples(tmp_path, foreground_value=0)  # ISBI: membranes are 0
    np.testing.assert_array_equal(white[0].label, 1 - black[0].label)
    with pytest.raises(ValueError, match="label value 255 for 3 classes"):
        load_samples(tmp_path, label_mode="multiclass", num_classes=3)
    Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8)).save(tmp_path / "label" / "0.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "image" / "0.png")
    (sample,) = load_samples(tmp_path, label_mode="multiclass", num_classes=3, names=["0"])
    np.testing.assert_array_equal(sample.label, [[0, 1], [2, 2]])


def test_split_is_deterministic_disjoint_and_complete() -> None:
    names = [str(i) for i in range(25)]
    train, val = split_names(names, 0.2, seed=3)
    assert (train, val) == split_names(names, 0.2, seed=3)
    assert len(val) == 5
    assert sorted(train + val, key=int) == names
    assert split_names(names, 0.2, seed=4)[1] != val


def test_valid_tiles_reflect_and_align(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    """Input crop = label crop + 2 halo, the halo reflected past the image border."""
    samples = load_samples(shapes(tmp_path, 2, size=40))
    # Make the image equal to the label, so that the crops can be compared.
    samples = [
        type(s)(s.name, (s.label * 255).astype(np.uint8)[:, :, None], s.label) for s in samples
    ]
    tile, halo = 92, 20  # depth 2 valid: output 52 > the 40 px image -> reflected too
    dataset = TileDataset(
        samples,
        tile_size=tile,
        halo=halo,
        length=6,
        num_classes=2,
        normalization=(1 / 255, 0.0),
        weight_map=False,
    )
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["image"].shape == (1, tile, tile)
        assert item["label"].shape == (tile - 2 * halo,) * 2
        centre = item["image"][0, halo:-halo, halo:-halo]
        assert torch.equal(centre.round().long(), item["label"])
        assert torch.equal(item["present"], item["label"].any().float().reshape(1))
    again = dataset[3]
    assert torch.equal(again["image"], dataset[3]["image"])  # seeded per item
    dataset.set_epoch(1)
    assert not torch.equal(again["image"], dataset[3]["image"])


def test_augmented_tiles_keep_binary_labels(tmp_path: Path, shapes: Callable[..., Path]) -> None:
    samples = load_samples(shapes(tmp_path, 2))
    dataset = TileDataset(
        samples,
        tile_size=64,
        halo=0,
        length=4,
        num_classes=2,
        normalization=normalization_stats(samples),
        augment=Augment(elastic_p=1.0),
    )
    for i in range(len(dataset)):
        item = dataset[i]
        assert set(item["label"].unique().tolist()) <= {0, 1}
        assert float(item["weight"].min()) > 0
