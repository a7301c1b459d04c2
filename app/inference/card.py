"""ModelCard: what the service must know about a model, validated and checked.

Sources, first found wins: a sidecar ``foo.json`` beside ``foo.onnx``; the
JSON under the key ``unet`` in the ONNX ``metadata_props``; otherwise what the
graph itself says (channels) plus a geometry found by probing (a user's own
model). Whatever the source, one probe inference at load checks that the
network maps an accepted input size to the output size the card promises.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.inference.errors import ModelCardError
from app.inference.geometry import Geometry, unet_geometry
from app.inference.tiler import RunFn

log = logging.getLogger(__name__)

METADATA_KEY = "unet"

# Where a card came from, as ``GET /model`` shows it under "card".
CardSource = Literal["sidecar", "embedded", "inferred"]


class Normalization(BaseModel):
    """Network input = v * scale + offset, v the pixel on the 0-255 scale (per channel or one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scale: float | list[float] = 1 / 255
    offset: float | list[float] = 0.0

    def per_channel(self, channels: int) -> tuple[list[float], list[float]]:
        scale = self.scale if isinstance(self.scale, list) else [self.scale] * channels
        offset = self.offset if isinstance(self.offset, list) else [self.offset] * channels
        return scale, offset


class Recipe(BaseModel):
    """How pixels become objects: the card's ``objects`` (API.md, "Objects"), validated once
    here; a request's ``min_area`` replaces the card's by ``model_copy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: Literal["components", "watershed"] = "components"
    boundary_class: int = Field(1, ge=0)
    seed_threshold: float = Field(0.5, gt=0, lt=1)
    min_area: int = Field(0, ge=0)


class ModelCard(BaseModel):
    """The ``unet`` metadata document of ../shared/API.md ("The model file").

    Further fields (training data, recipe, validation metrics) are kept as given.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    in_channels: Literal[1, 3]
    padding: Literal["valid", "same"]
    halo: int = Field(ge=0)
    size_multiple: int = Field(ge=1)
    size_offset: int = Field(ge=0)
    min_size: int = Field(ge=1)
    normalization: Normalization = Normalization()
    activation: Literal["sigmoid", "softmax"]
    threshold: float | None = Field(
        None, gt=0, lt=1, description="the default threshold of a binary model, calibrated"
    )
    objects: Recipe = Recipe()
    pixel_size_um: float | None = Field(
        None, gt=0, description="the physical pixel size the model was trained at, µm"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.activation == "sigmoid" and len(self.classes) != 2:
            raise ValueError(
                f"a sigmoid model has exactly 2 classes (background, foreground), "
                f"got {len(self.classes)}: {self.classes}"
            )
        for field in ("scale", "offset"):
            value = getattr(self.normalization, field)
            if isinstance(value, list) and len(value) != self.in_channels:
                raise ValueError(
                    f"normalization.{field} has {len(value)} values for "
                    f"in_channels={self.in_channels}"
                )
        if self.objects.boundary_class >= len(self.classes):
            raise ValueError(
                f"objects.boundary_class {self.objects.boundary_class} is not a class of "
                f"{self.classes}"
            )
        self.geometry()  # raises ValueError naming the inconsistent field
        return self

    @property
    def out_channels(self) -> int:
        """K, the logits channels: 1 for sigmoid, one per class for softmax."""
        return 1 if self.activation == "sigmoid" else len(self.classes)

    def geometry(self) -> Geometry:
        return Geometry(
            padding=self.padding,
            halo=self.halo,
            size_multiple=self.size_multiple,
            size_offset=self.size_offset,
            min_size=self.min_size,
        )

    def summary(self) -> dict[str, Any]:
        return self.model_dump(include=set(ModelCard.model_fields))


def parse_card(document: Any, source: str) -> ModelCard:
    """Validate a card document; a ModelCardError names the source and the field."""
    try:
        return ModelCard.model_validate(document)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "card"
            problems.append(f"field '{where}': {err['msg']}")
        raise ModelCardError(f"{source}: {'; '.join(problems)}") from None


def _read_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:  # a card saved as Latin-1 or UTF-16 by an editor
        raise ModelCardError(f"{source}: not UTF-8 (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelCardError(f"{source}: not a card: nested too deeply") from None


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _probe(run: RunFn, channels: int, size: int) -> tuple[int, int, int] | None:
    """(K, H', W') for one size x size input, or None when the network rejects it."""
    try:
        out = run(np.zeros((1, channels, size, size), dtype=np.float32))
    except Exception:  # ORT raises its own exception types for shape errors
        return None
    return (int(out.shape[1]), int(out.shape[2]), int(out.shape[3])) if out.ndim == 4 else None


def _candidate_geometries() -> list[Geometry]:
    """U-Nets with two convolutions per level, depth 1-6, same first (cheapest probes)."""
    return [unet_geometry(d, p) for p in ("same", "valid") for d in range(1, 7)]


def infer_card(
    name: str, run: RunFn, in_channels: int | None, out_channels: int | None
) -> dict[str, Any]:
    """A card for a model that has none: channels from the graph, geometry by probing."""
    channels = in_channels or 1
    for g in _candidate_geometries():
        padding, halo, m, offset, min_size = (
            g.padding,
            g.halo,
            g.size_multiple,
            g.size_offset,
            g.min_size,
        )
        # Two sizes, so that a net accepting anything (fully convolutional) is seen as such.
        sizes = [min_size, min_size + m] if padding == "valid" else [8 * m, 9 * m]
        probes = [_probe(run, channels, s) for s in sizes]
        if all(
            p is not None and p[1:] == (s - 2 * halo,) * 2
            for p, s in zip(probes, sizes, strict=True)
        ):
            k = probes[0][0] if probes[0] is not None else 1
            if out_channels is not None and k != out_channels:
                continue
            classes = (
                ["background", "foreground"]
                if k == 1
                else ["background", *(f"class_{i}" for i in range(1, k))]
            )
            norm = Normalization()
            log.warning(
                "model %s has no card (no 'unet' metadata, no sidecar %s.json): ASSUMED "
                "padding=%s, halo=%d, accepted sizes %dk+%d >= %d, normalization scale=%.6g "
                "offset=%g (pixels 0-255 to 0-1), activation=%s, %d input channel(s), "
                "classes %s; if any is wrong, write them to %s.json beside the model "
                "(API.md, 'The model file')",
                name, name, padding, halo, m, offset, min_size, norm.scale, norm.offset,
                "sigmoid" if k == 1 else "softmax", channels, ",".join(classes), name,
            )  # fmt: skip
            return {
                "name": name,
                "version": "unknown",
                "classes": classes,
                "in_channels": channels,
                "padding": padding,
                "halo": halo,
                "size_multiple": m,
                "size_offset": offset,
                "min_size": min_size,
                "activation": "sigmoid" if k == 1 else "softmax",
            }
    raise ModelCardError(
        f"{name}: no 'unet' metadata, no sidecar {name}.json, and the geometry could not be "
        "inferred by probing; write a sidecar JSON (see API.md, 'The model file')"
    )


def verify_card(card: ModelCard, run: RunFn, source: str) -> None:
    """One probe inference: the network must map a valid size to the promised output."""
    g = card.geometry()
    size = g.min_size if card.padding == "valid" else g.valid_size_at_least(64)
    probe = _probe(run, card.in_channels, size)
    expected = (card.out_channels, g.output_size(size), g.output_size(size))
    if probe != expected:
        got = "an error" if probe is None else f"K={probe[0]}, {probe[1]} x {probe[2]}"
        raise ModelCardError(
            f"{source} does not match the network: a {card.in_channels} x {size} x {size} input "
            f"should give K={expected[0]}, {expected[1]} x {expected[2]} (padding={card.padding}, "
            f"halo={card.halo}, activation={card.activation}, {len(card.classes)} classes), "
            f"the network gave {got}"
        )


def load_card(
    model_path: Path,
    metadata: dict[str, str],
    run: RunFn,
    input_shape: list[Any],
    output_shape: list[Any],
) -> tuple[ModelCard, CardSource]:
    """The model's card and where it came from: sidecar, else embedded metadata, else
    inferred; then verified."""
    sidecar = sidecar_path(model_path)
    origin: CardSource
    if sidecar.is_file():
        source, origin = f"sidecar {sidecar.name}", "sidecar"
        document = _read_json(sidecar.read_bytes(), source)
    elif METADATA_KEY in metadata:
        source, origin = f"{model_path.name} metadata '{METADATA_KEY}'", "embedded"
        document = _read_json(metadata[METADATA_KEY], source)
    else:
        source, origin = f"{model_path.name} (inferred from the graph)", "inferred"
        document = infer_card(
            model_path.stem, run, _static(input_shape[1]), _static(output_shape[1])
        )
    card = parse_card(document, source)
    graph_channels = _static(input_shape[1])
    if graph_channels is not None and graph_channels != card.in_channels:
        raise ModelCardError(
            f"{source}: field 'in_channels' is {card.in_channels}, the graph's input has "
            f"{graph_channels} channels"
        )
    verify_card(card, run, source)
    return card, origin
