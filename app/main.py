"""The app factory: ``uvicorn app.main:app`` (or ``uvicorn --factory app.main:create_app``).

Start-up, in the lifespan: settings read and validated, logging configured,
model loaded, one warm-up inference, then ready. A bad setting or an
unloadable model is one log line and a non-zero exit (uvicorn exits with 3),
not a traceback: the one exception we expect is logged by us and the
traceback starlette would hand to uvicorn is dropped (QuietStartupFailure).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors
from app.api import router
from app.api.deps import Admission, Service
from app.api.middleware import RequestContext
from app.codecs.images import register
from app.inference import InferenceError, Predictor, load_model
from app.inference.card import ModelCard
from app.inference.engine import CPU
from app.metrics import Metrics
from app.settings import Settings, describe

log = logging.getLogger("app")


class StartupError(Exception):
    """Start-up cannot go on; the message is the one log line."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", {})
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


def configure_logging(log_format: str, level: str = "info") -> None:
    """``app.*`` loggers to stderr as text or JSON; uvicorn's access log off (ours replaces it)."""
    logger = logging.getLogger("app")
    handler = next((h for h in logger.handlers if getattr(h, "unet", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.unet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    logger.setLevel(level.upper())
    logger.propagate = False
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if log_format == "json":  # uvicorn's own lines from here on (shutdown, errors) too
        for uvicorn_handler in logging.getLogger("uvicorn").handlers:
            uvicorn_handler.setFormatter(JsonFormatter())


def read_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise StartupError(describe(exc)) from None


def install_dicom(card: ModelCard) -> None:
    """Give the registry's DICOM entry its decoder, with the card's window (`dicom` extra)."""
    if importlib.util.find_spec("pydicom") is None:
        return  # DICOM stays recognised and answers 415
    import app.codecs.dicom_seg  # noqa: F401  # highdicom's import (~0.4 s) at start, not in a request
    from app.codecs.dicom import dicom_format, window_from_card

    try:
        window = window_from_card(card.model_extra)
    except ValueError as exc:
        raise StartupError(f"model card of {card.name}: {exc}") from None
    register(dicom_format(window))


def start_service(settings: Settings, metrics: Metrics) -> Service:
    """Load the model, build the predictor, run one warm-up inference (blocking)."""
    try:
        model = load_model(settings.model_path, settings.providers, settings.threads)
    except InferenceError as exc:
        raise StartupError(f"cannot serve UNET_MODEL_PATH={settings.model_path}: {exc}") from None
    tiling = settings.tiling(on_gpu=model.engine.providers[0] != CPU)
    try:
        predictor = Predictor(
            model.engine.run, model.card, tile_size=tiling[0], batch_size=tiling[1]
        )
    except ValueError as exc:
        raise StartupError(f"invalid tiling (UNET_TILE_SIZE / UNET_BATCH_SIZE): {exc}") from None
    card = model.card
    install_dicom(card)
    predictor.predict(np.zeros((card.min_size, card.min_size), dtype=np.uint8))  # warm-up
    metrics.model_info.labels(card.name, card.version, model.engine.providers[0]).set(1)
    admission = Admission(settings.max_queue, metrics)
    return Service(settings, model, predictor, admission, metrics, tiling=tiling)


class QuietStartupFailure:
    """Drops the traceback of a StartupError from the lifespan failure message.

    The error itself has been logged as one line; uvicorn still sees the
    failure and exits non-zero. Unexpected exceptions keep their traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        failed: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failed.append(message)  # sent below, once we know the exception
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except StartupError:
            await send({"type": "lifespan.startup.failed", "message": ""})
        except BaseException:
            for message in failed:
                await send(message)
            raise


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. ``settings`` None: read ``UNET_*`` in the lifespan (at start, not import)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings
        try:
            config = config if config is not None else read_settings()
            configure_logging(config.log_format, config.log_level)
            service = await asyncio.to_thread(start_service, config, metrics)
        except StartupError as exc:
            fmt = config.log_format if config else os.environ.get("UNET_LOG_FORMAT", "")
            configure_logging(fmt.strip().lower())
            log.error("start-up failed: %s", exc)
            raise
        app.state.service = service
        service.ready = True
        card = service.model.card
        log.info(
            "ready: model %s %s on %s, tiles %d x %d",
            card.name,
            card.version,
            service.model.engine.providers[0],
            *service.tiling,
        )
        try:
            yield
        finally:
            service.ready = False
            service.admission.close()

    app = FastAPI(
        title="U-Net segmentation service",
        version="0.1.0",
        summary="Exact overlap-tile U-Net inference: PNG / COCO RLE / probability maps",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(router)

    @app.get("/metrics", tags=["monitoring"], response_class=Response, summary="Prometheus")
    def prometheus() -> Response:
        """Prometheus text exposition of every ``unet_*`` collector."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestContext, metrics=metrics)
    app.add_middleware(QuietStartupFailure)
    return app


app = create_app()
