"""The torch-free inference core: model card, ONNX Runtime engine, overlap-tile, predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.inference.card import CardSource, ModelCard, load_card
from app.inference.engine import Engine
from app.inference.errors import (
    ImageShapeError,
    InferenceError,
    ModelCardError,
    ModelLoadError,
    ProviderError,
)
from app.inference.geometry import Geometry
from app.inference.plan import plan_tiles
from app.inference.predictor import Prediction, Predictor
from app.inference.providers import AUTO, ProviderOptions
from app.inference.tiler import RunFn, predict_tiled, predict_whole

__all__ = [
    "Engine",
    "Geometry",
    "ImageShapeError",
    "InferenceError",
    "LoadedModel",
    "ModelCard",
    "ModelCardError",
    "ModelLoadError",
    "Prediction",
    "Predictor",
    "ProviderError",
    "ProviderOptions",
    "RunFn",
    "load_model",
    "plan_tiles",
    "predict_tiled",
    "predict_whole",
]


@dataclass(frozen=True)
class LoadedModel:
    engine: Engine
    card: ModelCard
    card_source: CardSource  # "sidecar", "embedded" or "inferred" (GET /model's "card")


def load_model(
    path: str | Path,
    providers: str = AUTO,
    threads: int = 0,
    options: ProviderOptions | None = None,
) -> LoadedModel:
    """Open an ONNX model, read and verify its card (one probe inference)."""
    engine = Engine(path, providers=providers, threads=threads, options=options)
    card, source = load_card(
        engine.path, engine.metadata, engine.run, engine.input_shape, engine.output_shape
    )
    return LoadedModel(engine, card, source)
