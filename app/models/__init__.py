"""The model repository: load, warm, hot reload, pick by name (no HTTP)."""

from __future__ import annotations

from app.models.load import ModelLoadError, load_service, provider_options
from app.models.repository import Entry, Repository
from app.models.startup import describe_model, open_models

__all__ = [
    "Entry",
    "ModelLoadError",
    "Repository",
    "describe_model",
    "load_service",
    "open_models",
    "provider_options",
]
