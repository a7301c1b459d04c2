"""Every default of the training module, in one place.

``UNetConfig`` is the network (paper defaults: valid padding, 4 poolings,
64 channels at the top, dropout 0.5 at the end of the contracting path);
``TrainConfig`` is everything else. The CLI is generated from these fields
(``--base-channels 32``, ``--no-weight-map``), so a default lives here once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.inference.geometry import Geometry, unet_geometry

Padding = Literal["valid", "same"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def comma_list(element: type[Any]) -> Callable[[str], tuple[Any, ...]]:
    """A parser of 'a, b' -> (element('a'), element('b')): class names, an offset '-0.6,-0.2',
    image names. Named for argparse's "invalid comma-separated float value: 'up,0'"."""

    def parse(text: str) -> tuple[Any, ...]:
        return tuple(element(x.strip()) for x in text.split(","))

    parse.__name__ = f"comma-separated {element.__name__}"
    return parse


@dataclass(frozen=True)
class UNetConfig:
    """The network's shape and options (Ronneberger et al. 2015 by default)."""

    in_channels: int = field(default=1, metadata=_help("image channels: 1 (gray) or 3 (RGB)"))
    num_classes: int = field(
        default=2, metadata=_help("classes incl. background; 2 = one sigmoid logit")
    )
    depth: int = field(default=4, metadata=_help("poolings (paper: 4)"))
    base_channels: int = field(default=64, metadata=_help("channels of the top level (paper: 64)"))
    padding: Padding = field(default="valid", metadata=_help("valid (paper: 572 -> 388) or same"))
    batch_norm: bool = field(default=False, metadata=_help("BatchNorm after every 3x3 conv"))
    dropout: float = field(
        default=0.5, metadata=_help("dropout at the end of the contracting path")
    )
    classification_head: bool = field(
        default=False, metadata=_help("image-level head -> image_scores")
    )
    deep_supervision: bool = field(
        default=False, metadata=_help("a prediction per decoder level, fused")
    )

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background too: >= 2, got {self.num_classes}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be in 1..6, got {self.depth}")
        if self.base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {self.base_channels}")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def out_channels(self) -> int:
        """K logits: 1 for a binary (sigmoid) model, one per class otherwise (softmax)."""
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def activation(self) -> Literal["sigmoid", "softmax"]:
        return "sigmoid" if self.num_classes == 2 else "softmax"

    def geometry(self) -> Geometry:
        """Halo and accepted sizes (paper: halo 92, 16k + 12 >= 188), see unet_geometry."""
        return unet_geometry(self.depth, self.padding)

    @property
    def halo(self) -> int:
        return self.geometry().halo

    @property
    def size_multiple(self) -> int:
        return self.geometry().size_multiple

    @property
    def size_offset(self) -> int:
        return self.geometry().size_offset

    @property
    def min_size(self) -> int:
        return self.geometry().min_size

    def widths(self) -> list[int]:
        """Channels per level, top to bottleneck: 64, 128, 256, 512, 1024 for the paper."""
        return [self.base_channels * 2**i for i in range(self.depth + 1)]


@dataclass(frozen=True)
class TrainConfig:
    """A training run: data, loss, augmentation, optimisation, validation."""

    # 1. Data: DIR/image/NAME.png|tif + DIR/label/NAME.png|tif
    data: str = field(default="", metadata=_help("folder with image/ and label/"))
    out: str = field(default="", metadata=_help("run folder: checkpoints, metrics, curves"))
    classes: tuple[str, ...] = field(
        default=("background", "foreground"),
        metadata=_help("class names, index 0 = background (comma-separated)"),
    )
    label_mode: Literal["binary", "multiclass"] = field(
        default="binary",
        metadata=_help(
            "binary: mask == foreground_value is class 1; multiclass: pixel = class index"
        ),
    )
    foreground_value: int = field(
        default=255,
        metadata=_help("binary masks: the pixel value of the foreground (ISBI membranes: 0)"),
    )
    objects: Literal["foreground", "background"] = field(
        default="foreground",
        metadata=_help("which region forms the objects (cells) for border weights and Rand error"),
    )
    val_fraction: float = field(
        default=0.2, metadata=_help("share of images held out for validation")
    )
    select_images: int = field(
        default=0,
        metadata=_help(
            "validation images (the first N of the split) that choose the best epoch, and "
            "later the threshold and seed (calibrate --split select); the rest only report "
            "(evaluate --split report). 0: every validation image chooses and reports"
        ),
    )
    # 2. Model (the network's own options are in UNetConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    # 3. Loss: soft Dice + pixel-weighted cross-entropy (paper's weight map)
    dice_weight: float = field(default=1.0, metadata=_help("weight of the soft Dice loss"))
    ce_weight: float = field(default=1.0, metadata=_help("weight of the (weighted) cross-entropy"))
    weight_map: bool = field(default=True, metadata=_help("the paper's border weight map w(x)"))
    w0: float = field(default=10.0, metadata=_help("weight map: border weight w0 (paper: 10)"))
    sigma: float = field(
        default=5.0, metadata=_help("weight map: border width sigma in px (paper: 5)")
    )
    side_weight: float = field(
        default=0.5, metadata=_help("deep supervision: weight of each side output's loss")
    )
    image_weight: float = field(
        default=0.2, metadata=_help("classification head: weight of its loss")
    )
    # 4. Augmentation
    flips: bool = field(default=True, metadata=_help("random horizontal/vertical flips"))
    rot90: bool = field(default=True, metadata=_help("random 90-degree rotations"))
    label_offset: tuple[float, float] = field(
        default=(0.0, 0.0),
        metadata=_help(
            "dy,dx px of the labels from what they trace (python -m training offset; "
            "ISBI: -0.57,-0.17), kept through flips and quarter turns; write --label-offset=DY,DX"
        ),
    )
    elastic_p: float = field(
        default=0.5, metadata=_help("probability of the paper's elastic deformation")
    )
    elastic_std: float = field(
        default=10.0, metadata=_help("elastic: displacement std in px (paper: 10)")
    )
    elastic_grid: int = field(
        default=3, metadata=_help("elastic: control grid points per axis (paper: 3)")
    )
    intensity: float = field(
        default=0.1, metadata=_help("intensity jitter: +-scale and +-shift (0 = off)")
    )
    # 5. Optimisation
    tile_size: int = field(
        default=572, metadata=_help("input crop side, a valid size (paper: 572)")
    )
    batch_size: int = field(default=2, metadata=_help("tiles per step"))
    epochs: int = field(default=50, metadata=_help("epochs"))
    tiles_per_epoch: int = field(
        default=0,
        metadata=_help(
            "tiles per epoch; 0 = enough output tiles to cover the training images once"
        ),
    )
    optimizer: Literal["adam", "sgd"] = field(
        default="adam", metadata=_help("adam, or sgd with momentum (paper: 0.99)")
    )
    lr: float = field(default=1e-3, metadata=_help("learning rate"))
    schedule: Literal["constant", "cosine"] = field(
        default="constant",
        metadata=_help(
            "learning rate per epoch: constant, or a half cosine from --lr after epoch "
            "--decay-from down to --min-lr at the last epoch"
        ),
    )
    decay_from: int = field(
        default=0, metadata=_help("cosine: the last epoch at the full --lr (0: decay from 1)")
    )
    min_lr: float = field(default=0.0, metadata=_help("cosine: the rate of the last epoch"))
    momentum: float = field(default=0.99, metadata=_help("sgd momentum (paper: 0.99)"))
    weight_decay: float = field(default=0.0, metadata=_help("weight decay"))
    amp: bool = field(default=True, metadata=_help("mixed precision on CUDA (ignored on CPU)"))
    device: str = field(
        default="auto", metadata=_help("auto (CUDA when available), cpu, cuda, cuda:N")
    )
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes"))
    seed: int = field(default=0, metadata=_help("seed of the split, crops, augmentation and init"))
    # 6. Validation (whole images through app.inference's tiler) and output
    val_every: int = field(
        default=1, metadata=_help("validate every N epochs (and after the last)")
    )
    val_tile_size: int = field(default=572, metadata=_help("validation tile size bound"))
    val_batch_size: int = field(default=2, metadata=_help("validation tiles per batch"))
    name: str = field(default="unet", metadata=_help("model name written into the model card"))
    version: str = field(
        default="1.0.0", metadata=_help("model version written into the model card")
    )
    progress: bool = field(default=True, metadata=_help("tqdm progress bar"))

    def __post_init__(self) -> None:
        if len(self.classes) != self.model.num_classes:
            raise ValueError(
                f"{len(self.classes)} class names {list(self.classes)} for "
                f"num_classes={self.model.num_classes}; give one name per class"
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.select_images < 0:
            raise ValueError(f"select_images must be >= 0, got {self.select_images}")
        geometry = self.model.geometry()
        for name in ("tile_size", "val_tile_size"):
            size = getattr(self, name)
            if not geometry.is_valid_size(size):
                lower, upper = geometry.nearest_valid_sizes(size)
                nearest = f"{lower} or {upper}" if lower is not None else f"{upper}"
                raise ValueError(
                    f"{name} {size} is not a valid input size for this U-Net "
                    f"({self.model.size_multiple}k + {self.model.size_offset} >= "
                    f"{self.model.min_size}); nearest valid sizes: {nearest}"
                )
        for name in ("batch_size", "epochs", "val_every", "val_batch_size", "elastic_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be >= 2, got {self.elastic_grid}")
        if self.schedule == "cosine" and not 0 <= self.decay_from < self.epochs:
            raise ValueError(
                f"decay_from must be in [0, epochs), got {self.decay_from} for {self.epochs} epochs"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if not 0 <= self.elastic_p <= 1:
            raise ValueError(f"elastic_p must be in [0, 1], got {self.elastic_p}")
        if len(self.label_offset) != 2 or not all(abs(v) <= 4 for v in self.label_offset):
            raise ValueError(
                f"label_offset is dy,dx in px, each within 4, got {list(self.label_offset)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists), for checkpoints and the model card."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("model"), dict):
            values["model"] = UNetConfig(**values["model"])
        hints = typing.get_type_hints(cls)
        for name in values:  # JSON gave lists where the fields hold tuples
            if typing.get_origin(hints[name]) is tuple:
                values[name] = tuple(values[name])
        return cls(**values)
