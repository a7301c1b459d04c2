"""The model repository at start-up: every model loaded and warm before the service says it
is ready, or one clear reason why the service cannot start."""

from __future__ import annotations

from pathlib import Path

from app.codecs.outputs import Outputs
from app.errors import StartupError
from app.metrics import Metrics
from app.models.load import ModelLoadError, Warm, load_service
from app.models.repository import Entry, Repository
from app.service import Service
from app.settings import Settings


def open_models(
    settings: Settings, metrics: Metrics, outputs: Outputs | None, warm: Warm | None = None
) -> Repository:
    """The model repository, every model loaded and warm; StartupError when the single
    model (UNET_MODEL_PATH) or the default one cannot be served, or the folder holds none.
    A repository's other models that cannot be loaded are logged and not served.

    warm: runs each model's warm-up inference (the service's: its turn at the jobs' gate,
    so that a hot reload's warm-up never runs beside a request's inference)."""
    folder = settings.model_repository

    def build(path: Path) -> Service:
        return load_service(settings, metrics, outputs, path, warm)

    repository = Repository(
        build, folder, settings.model_path, settings.default_model, settings.repository_poll
    )
    if folder is None:
        if settings.default_model not in (None, settings.model_path.stem):
            raise StartupError(
                f"UNET_DEFAULT_MODEL={settings.default_model!r} names a model of a repository "
                f"(UNET_MODEL_REPOSITORY); UNET_MODEL_PATH serves one, "
                f"{settings.model_path.stem!r}"
            )
        try:
            service = build(settings.model_path)
        except ModelLoadError as exc:
            raise StartupError(f"UNET_MODEL_PATH: {exc}") from None
        repository.adopt(settings.model_path.stem, settings.model_path, service)
        return repository
    if not folder.is_dir():
        raise StartupError(f"UNET_MODEL_REPOSITORY={folder}: not a folder")
    repository.scan()
    names = repository.names()
    if not names:
        raise StartupError(f"UNET_MODEL_REPOSITORY={folder}: no .onnx model in it")
    default = settings.default_model
    if default is not None and repository.find(default) is None:
        reason = "not among its models" if default not in names else "it cannot be loaded"
        raise StartupError(f"UNET_DEFAULT_MODEL={default!r}: {reason} (the models: {names})")
    if all(repository.find(name) is None for name in names):
        raise StartupError(f"UNET_MODEL_REPOSITORY={folder}: no model could be loaded")
    return repository


def describe_model(entry: Entry) -> str:
    """``name (card version on provider, tiles T x B)`` for the start-up line."""
    service = entry.service
    if service is None:
        return f"{entry.name} (not loaded)"
    card, predictor = service.model.card, service.predictor
    return (
        f"{entry.name} ({card.name} {card.version} on {service.model.engine.providers[0]}, "
        f"tiles {predictor.tile_size} x {predictor.batch_size})"
    )
