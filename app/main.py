"""The app factory: ``uvicorn app.main:app`` (or ``uvicorn --factory app.main:create_app``).

Start-up, in the lifespan: settings read and validated, logging configured,
model loaded, one warm-up inference, then ready. A bad setting or an
unloadable model is one log line and a non-zero exit (uvicorn exits with 3),
not a traceback: the one exception we expect is logged by us and the
traceback starlette would hand to uvicorn is dropped (QuietStartupFailure).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import errors, methods_at, router
from app.api.admission import Admission
from app.api.middleware import Cors, RequestContext
from app.codecs.outputs import Outputs
from app.errors import StartupError
from app.jobs.cluster import JobCluster
from app.jobs.gate import Gate
from app.jobs.runner import JobRunner
from app.jobs.store import JobStore
from app.logging import configure_logging
from app.metrics import Metrics
from app.models import Repository, describe_model, open_models
from app.models import provider_options as provider_options  # tests import it from here
from app.service import Service, stop_reading_on_signals
from app.settings import Settings, describe

log = logging.getLogger("app")


def read_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise StartupError(describe(exc)) from None


def nothing() -> None:
    """No reason to stop waiting (a warm-up is never cancelled)."""


def follow_models(
    app: FastAPI, models: Repository, metrics: Metrics
) -> Callable[[str, Service | None], None]:
    """What a model added, replaced or removed changes beyond the repository: the model
    info metric, and the service of /health, /model and the jobs when it is the primary."""
    shown: dict[str, tuple[str, str, str, str]] = {}

    def changed(name: str, service: Service | None) -> None:
        if name in shown:
            metrics.model_info.remove(*shown.pop(name))
        if service is not None:
            card = service.model.card
            shown[name] = (name, card.name, card.version, service.model.engine.providers[0])
            metrics.model_info.labels(*shown[name]).set(1)
        primary = models.primary()
        if primary is not None:
            app.state.service = app.state.jobs.service = primary

    return changed


def open_cluster(settings: Settings) -> JobCluster | None:
    """UNET_DASK_SCHEDULER's cluster for the jobs; StartupError when it cannot be reached."""
    if not settings.dask_scheduler:
        return None
    try:
        return JobCluster(settings.dask_scheduler)
    except (OSError, TimeoutError) as exc:
        raise StartupError(
            f"cannot reach the Dask scheduler UNET_DASK_SCHEDULER={settings.dask_scheduler}: {exc}"
        ) from None
    except ImportError:
        raise StartupError("UNET_DASK_SCHEDULER needs distributed: pip install .[dask]") from None


def open_jobs(settings: Settings) -> JobStore:
    """The job store under UNET_JOBS_DIR (made if absent); StartupError when it cannot be."""
    try:
        return JobStore(settings.jobs_dir)
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(f"UNET_JOBS_DIR={settings.jobs_dir}: {exc}") from None


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


def make_lifespan(
    settings: Settings | None, outputs: Outputs | None, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shutdown: settings, logging, the Service, the admission queue, the jobs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings
        try:
            config = config if config is not None else read_settings()
            configure_logging(config.log_format, config.log_level)
            gate = Gate()
            warm = partial(gate.job_batch, check=nothing)  # a hot reload's warm-up: its turn
            models = await asyncio.to_thread(open_models, config, metrics, outputs, warm)
            service = models.primary()
            assert service is not None  # open_models: at least one model answers
            store = await asyncio.to_thread(open_jobs, config)
            cluster = await asyncio.to_thread(open_cluster, config)
        except StartupError as exc:
            fmt = config.log_format if config else os.environ.get("UNET_LOG_FORMAT", "")
            configure_logging(fmt.strip().lower())
            log.error("start-up failed: %s", exc)
            raise
        runner = JobRunner(store, service, gate, cluster, models.get)
        await asyncio.to_thread(runner.start)
        admission = Admission(config.max_queue, metrics, gate)
        app.state.admission, app.state.jobs = admission, runner
        app.state.service, app.state.models = service, models
        models.on_change = follow_models(app, models, metrics)
        for entry in models.listing():
            if entry.service is not None:
                models.on_change(entry.name, entry.service)
        undo_signals = stop_reading_on_signals(models.stopping)
        models.start()
        log.info("ready: %s", ", ".join(describe_model(e) for e in models.listing()))
        try:
            yield
        finally:
            undo_signals()
            await asyncio.to_thread(runner.stop)  # the running job is queued again
            await asyncio.to_thread(models.stop)
            admission.close()
            store.close()
            if cluster is not None:
                await asyncio.to_thread(cluster.close)

    return lifespan


def create_app(settings: Settings | None = None, outputs: Outputs | None = None) -> FastAPI:
    """The ASGI app. ``settings`` None: read ``UNET_*`` in the lifespan (at start, not import).

    outputs: the output formats served (default: the installation's, default_outputs).
    """
    metrics = Metrics()
    # /docs and /redoc with their assets served by the service itself (fastapi-offline):
    # a hospital network cannot reach a CDN. No redirects: /segment/ is 404, not a 307
    # whose Location is built from the client's Host header.
    app = FastAPIOffline(
        title="U-Net segmentation service",
        version="0.1.0",
        summary="Exact overlap-tile U-Net inference: PNG / COCO RLE / probability maps",
        lifespan=make_lifespan(settings, outputs, metrics),
        redirect_slashes=False,
    )
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(router)
    app.add_exception_handler(405, method_not_allowed)
    app.openapi = model_openapi(app)  # type: ignore[method-assign]

    @app.get("/metrics", tags=["monitoring"], response_class=Response, summary="Prometheus")
    def prometheus() -> Response:
        """Prometheus text exposition of every ``unet_*`` collector."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Cors)
    app.add_middleware(RequestContext, metrics=metrics)
    app.add_middleware(QuietStartupFailure)
    return app


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with ``Allow`` naming every method of the path (GET and POST at /jobs)."""
    given = getattr(exc, "headers", None) or {}  # starlette's, for routes of the app itself
    methods = {*methods_at(request.url.path), *filter(None, given.get("Allow", "").split(", "))}
    return errors.error_response(405, "Method Not Allowed", {"Allow": ", ".join(sorted(methods))})


def model_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI schema as this app serves it: ``format`` from its outputs registry,
    ``class`` bounded by the model's classes, and API-key security declared only when
    UNET_API_KEYS is set (open otherwise)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        schema = copy.deepcopy(default())  # FastAPI caches the generic one
        service: Service | None = getattr(app.state, "service", None)
        if service is None:
            return schema
        highest = len(service.model.card.classes) - 1
        for parameter in schema["paths"]["/segment"]["post"].get("parameters", []):
            if parameter["name"] == "class":
                parameter["schema"]["maximum"] = highest
            if parameter["name"] == "format":
                parameter["schema"]["enum"] = service.outputs.names()
        names = app.state.models.names()
        for path, operations in schema["paths"].items():
            for operation in operations.values() if path.startswith("/v2/models/") else ():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "name":  # the models served, now
                        parameter["schema"]["enum"] = names
        if not service.settings.api_keys:
            schema.get("components", {}).pop("securitySchemes", None)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
        return schema

    return openapi


app = create_app()
