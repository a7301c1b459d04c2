"""Domain exceptions of the inference core.

They carry a message a person can act on; only ``app/errors.py`` maps them to
HTTP statuses. Messages name files, fields and sizes -- never image content.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of every error raised by ``app.inference``."""


class ModelLoadError(InferenceError):
    """The model file is missing, unreadable, not ONNX, or not a segmentation network."""


class ModelCardError(ModelLoadError):
    """The ``unet`` metadata (embedded or sidecar) lacks a field or contradicts the graph."""


class ProviderError(InferenceError):
    """An execution provider that was asked for explicitly cannot be used."""


class ImageShapeError(InferenceError, ValueError):
    """An image the predictor cannot take (dimensions, channels, dtype)."""
