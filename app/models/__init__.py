"""The model repository: load, warm, hot reload, pick by name (no HTTP)."""

from __future__ import annotations

from app.models.load import ModelLoadError, load_service, provider_options
from app.models.repository import Entry, Repository

__all__ = ["Entry", "ModelLoadError", "Repository", "load_service", "provider_options"]
