"""Image/mask folder pairs -> samples -> random training tiles.

Layout: ``DIR/image/NAME.png`` with ``DIR/label/NAME.png`` (``.tif``/``.tiff``
too; image and label may differ in extension). Labels are either binary masks
(``mask == foreground_value`` is class 1, e.g. 255 -- or 0 for ISBI 2012, whose
foreground class is the membrane drawn black) or label maps whose pixel values
are class indices.

Training tiles for a valid-padding network: the label crop is the network's
output (T - 2 halo), the image crop around it is T x T and reaches ``halo`` px
beyond it, reflected past the image borders -- what the overlap-tile strategy
feeds the network at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import Dataset

from app.inference.tiler import reflect_indices
from training.augment import Augment
from training.losses import Objects, border_weight_map

SUFFIXES = (".png", ".tif", ".tiff")
LabelMode = Literal["binary", "multiclass"]


@dataclass(frozen=True)
class Sample:
    """One image: raw pixels H x W x C (uint8/uint16, as the service receives them),
    label H x W int64 class indices."""

    name: str
    image: np.ndarray
    label: npt.NDArray[np.int64]


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder; expected DIR/image/NAME.png and DIR/label/NAME.png"
        )
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
            if path.stem in found:
                raise ValueError(f"two files named {path.stem} in {folder}: keep one")
            found[path.stem] = path
    return found


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, image path, label path) for every image with a label, sorted by name."""
    root = Path(root)
    images, labels = _files(root / "image"), _files(root / "label")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) in {root / 'image'} have no label in {root / 'label'} "
            f"(e.g. {missing[:3]}); add the labels or move the images out"
        )
    if not images:
        raise ValueError(f"no .png/.tif images in {root / 'image'}")
    return [(name, images[name], labels[name]) for name in sorted(images, key=_natural)]


def _natural(name: str) -> tuple[int, int | str]:
    """Sort 2 before 10."""
    return (0, int(name)) if name.isdigit() else (1, name)


def read_image(path: Path) -> np.ndarray:
    """H x W x C (C = 1 or 3) uint8 or uint16; the first page of a multi-page TIFF."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L"):
            array = np.asarray(img, dtype=np.uint16)
        elif img.mode == "I":  # 32-bit integer TIFFs holding 16-bit data
            array = np.asarray(img)
            if array.min() < 0 or array.max() > 65535:
                raise ValueError(f"{path}: 32-bit pixel values outside 0..65535")
            array = array.astype(np.uint16)
        elif img.mode in ("L", "RGB"):
            array = np.asarray(img)
        elif img.mode in ("LA", "P", "RGBA", "1"):
            array = np.asarray(img.convert("L" if img.mode in ("LA", "1") else "RGB"))
        else:
            raise ValueError(f"{path}: unsupported pixel mode {img.mode}; save as 8/16-bit")
    return array[:, :, None] if array.ndim == 2 else array


def read_label(
    path: Path, mode: LabelMode, foreground_value: int, num_classes: int
) -> npt.NDArray[np.int64]:
    """H x W int64 class indices from a mask file (see the module docstring)."""
    raw = read_image(path)
    if raw.shape[2] != 1:
        raise ValueError(f"{path}: a label must be single-channel, got {raw.shape[2]} channels")
    values = raw[:, :, 0].astype(np.int64)
    if mode == "binary":
        return (values == foreground_value).astype(np.int64)
    if values.max() >= num_classes:
        raise ValueError(
            f"{path}: label value {values.max()} for {num_classes} classes; a multiclass "
            "label holds class indices 0..num_classes-1 (binary 0/255 masks: --label-mode binary)"
        )
    return values


def load_samples(
    root: str | Path,
    *,
    label_mode: LabelMode = "binary",
    foreground_value: int = 255,
    num_classes: int = 2,
    names: list[str] | None = None,
) -> list[Sample]:
    """Read the image/label pairs under ``root`` (only ``names`` when given)."""
    pairs = find_pairs(root)
    if names is not None:
        unknown = sorted(set(names) - {name for name, _, _ in pairs})
        if unknown:
            raise ValueError(f"images {unknown[:5]} are not in {root}")
        pairs = [p for p in pairs if p[0] in set(names)]
    samples = []
    for name, image_path, label_path in pairs:
        image = read_image(image_path)
        label = read_label(label_path, label_mode, foreground_value, num_classes)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{name}: image {image.shape[1]} x {image.shape[0]} but label "
                f"{label.shape[1]} x {label.shape[0]} px"
            )
        samples.append(Sample(name, image, label))
    return samples


def split_names(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic (train, val) split: a seeded permutation of the sorted names."""
    if len(names) < 2:
        raise ValueError(f"need at least 2 images to hold one out for validation, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(max(1, round(val_fraction * len(names))), len(names) - 1)
    val = sorted((names[i] for i in order[:n_val]), key=_natural)
    train = sorted((names[i] for i in order[n_val:]), key=_natural)
    return train, val


def normalization_stats(samples: list[Sample]) -> tuple[float, float]:
    """(scale, offset) so that v * scale + offset has mean 0, std 1 over the images.

    v is on the 0-255 scale (16-bit divided by 257), the model card's convention.
    """
    values = np.concatenate(
        [(s.image / (257.0 if s.image.dtype == np.uint16 else 1.0)).ravel() for s in samples]
    )
    mean, std = float(values.mean()), float(values.std())
    std = std if std > 1e-6 else 1.0  # a constant image: keep the scale finite
    return 1.0 / std, -mean / std


class TileDataset(Dataset[dict[str, torch.Tensor]]):
    """Random tiles: ``length`` items per epoch, item i drawn with its own seeded RNG.

    Each item: image C x T x T float32 (normalised), label T' x T' int64,
    weight T' x T' float32 (the paper's weight map, or ones), present
    (num_classes - 1) float32 (class seen in the label crop: the image-level
    target of the classification head); T' = T - 2 halo.
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        tile_size: int,
        halo: int,
        length: int,
        num_classes: int,
        normalization: tuple[float, float],
        augment: Augment | None = None,
        weight_map: bool = True,
        objects: Objects = "foreground",
        w0: float = 10.0,
        sigma: float = 5.0,
        seed: int = 0,
    ) -> None:
        if not samples:
            raise ValueError("no training images")
        if tile_size - 2 * halo < 1:
            raise ValueError(f"tile_size {tile_size} leaves no output for halo {halo}")
        self.tile, self.halo, self.length = tile_size, halo, length
        self.num_classes, self.augment, self.seed = num_classes, augment, seed
        self.epoch = 0
        scale, offset = normalization
        self.images = [
            (s.image.astype(np.float32) / (257.0 if s.image.dtype == np.uint16 else 1.0))
            * np.float32(scale)
            + np.float32(offset)
            for s in samples
        ]
        self.labels = [s.label for s in samples]
        self.weights = [
            border_weight_map(s.label, num_classes, objects=objects, w0=w0, sigma=sigma)
            if weight_map
            else np.ones(s.label.shape, dtype=np.float32)
            for s in samples
        ]

    def set_epoch(self, epoch: int) -> None:
        """Draw different tiles each epoch (call before iterating, as DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.integers(len(self.images)))
        height, width = self.labels[k].shape
        out = self.tile - 2 * self.halo
        # Output (label) window origin; the input window starts halo px before it.
        y = int(rng.integers(max(height - out, 0) + 1)) - self.halo
        x = int(rng.integers(max(width - out, 0) + 1)) - self.halo
        rows = reflect_indices(y, self.tile, height)
        cols = reflect_indices(x, self.tile, width)

        def crop(array: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(array[rows][:, cols])

        image = torch.from_numpy(crop(self.images[k])).permute(2, 0, 1)  # C x T x T
        label = torch.from_numpy(crop(self.labels[k]))  # T x T: augmented with the image
        weight = torch.from_numpy(crop(self.weights[k]))
        if self.augment is not None:
            image, label, weight = self.augment(image, label, weight, rng)
        h = self.halo
        if h:
            label, weight = label[h:-h, h:-h], weight[h:-h, h:-h]  # T' x T'
        present = torch.stack([(label == c).any() for c in range(1, self.num_classes)]).float()
        return {
            "image": image.float().contiguous(),
            "label": label.long().contiguous(),
            "weight": weight.float().contiguous(),
            "present": present,
        }
