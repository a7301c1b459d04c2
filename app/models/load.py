"""Loading one model into a Service: the engine, its card checked, the predictor, the
registries, one warm-up inference. What start-up does for each model of the repository,
and what a hot reload does for a new or replaced file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.codecs.images import Decoders
from app.codecs.outputs import Outputs, default_outputs
from app.errors import StartupError
from app.inference import InferenceError, flood, load_model
from app.inference.card import ModelCard
from app.inference.providers import ProviderOptions
from app.metrics import Metrics
from app.pipeline.context import on_gpu, predictor_for
from app.service import Service, WorkLimit, input_formats
from app.settings import Settings


class ModelLoadError(StartupError):
    """A model cannot be served; the message is one log line naming the file and why (at
    start-up it stops the service; in a hot reload the old version stays)."""


def checked_input_formats(card: ModelCard) -> Decoders:
    try:
        return input_formats(card)
    except ValueError as exc:
        raise ModelLoadError(f"model card of {card.name}: {exc}") from None


def provider_options(settings: Settings, path: Path | None = None) -> ProviderOptions:
    """The provider options of the settings; for TensorRT with the fixed tile batch as its
    optimisation profile (the model's geometry read once on the CPU first)."""
    path = path or settings.model_path
    options = ProviderOptions(
        settings.device_id,
        settings.cudnn_conv_algo_search,
        settings.trt_cache_dir,
        settings.trt_fp16,
        precision=settings.precision,
    )
    if settings.providers != "tensorrt":
        return options
    if settings.trt_cache_dir is not None:
        try:
            settings.trt_cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelLoadError(f"UNET_TRT_CACHE_DIR={settings.trt_cache_dir}: {exc}") from None
    try:
        card = load_model(path, "cpu", settings.threads).card  # fp32: geometry only
    except InferenceError as exc:
        raise ModelLoadError(f"cannot serve {path}: {exc}") from None
    tile, batch = settings.tiling(on_gpu=True)
    side = card.geometry().valid_size_at_most(tile) or card.min_size
    return replace(options, input_shape=(batch, card.in_channels, side, side))


Warm = Callable[[Callable[[], object]], object]


def load_service(
    settings: Settings,
    metrics: Metrics,
    outputs: Outputs | None = None,
    path: Path | None = None,
    warm: Warm | None = None,
) -> Service:
    """Load the model at ``path`` (default UNET_MODEL_PATH), build the predictor and the
    registries, warm up (blocking). ModelLoadError names what is wrong.

    outputs: the output formats; by default the installation's (default_outputs).
    warm: runs the warm-up inference (a hot reload's goes through the jobs' gate: one
    inference at a time on the device); None: at once.
    """
    path = path or settings.model_path
    try:
        model = load_model(
            path, settings.providers, settings.threads, provider_options(settings, path)
        )
    except InferenceError as exc:
        raise ModelLoadError(f"cannot serve {path}: {exc}") from None
    tile_size, batch_size = settings.tiling(on_gpu(model))
    try:
        predictor = predictor_for(model, tile_size, batch_size)
    except ValueError as exc:
        raise ModelLoadError(f"invalid tiling (UNET_TILE_SIZE / UNET_BATCH_SIZE): {exc}") from None
    card = model.card
    inputs = checked_input_formats(card)
    # Warm-up: on a GPU this is the one shape every request will run (fixed plan).
    zeros = np.zeros((card.min_size, card.min_size), dtype=np.uint8)
    (warm or (lambda run: run()))(lambda: predictor.predict(zeros))
    if card.objects.method == "watershed":
        flood.warm()  # compiled here, not on the first request for objects
    settings = settings.model_copy(update={"model_path": Path(path)})
    work = WorkLimit(predictor, settings.max_image_pixels)
    return Service(settings, model, predictor, metrics, work, inputs, outputs or default_outputs())
