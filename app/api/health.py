"""Health probes: ``/health/live`` (the process serves), ``/health/ready`` (the model is warm).

Never behind an API key: orchestrators probe them unauthenticated.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.schemas import HealthResponse, Status
from app.models import Repository
from app.service import Service

router = APIRouter(prefix="/health", tags=["health"])


def _ready_service(request: Request) -> Service | None:
    """The default model's ready Service (else the first ready model's), or None."""
    models: Repository | None = getattr(request.app.state, "models", None)
    service = models.primary() if models is not None else None
    return service if service is not None and service.ready else None


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Status, "description": "the model is not loaded and warmed up yet"}
}


@router.get("/live", response_model=Status, summary="Liveness")
def live() -> Status:
    """200 while the process serves requests."""
    return Status(status="live")


@router.get("/ready", response_model=Status, responses=_NOT_READY, summary="Readiness")
def ready(request: Request) -> Status | JSONResponse:
    """200 once the model is loaded and warmed up, else 503."""
    if _ready_service(request) is None:
        return JSONResponse({"status": "not ready"}, status_code=503)
    return Status(status="ready")


@router.get(
    "",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    responses=_NOT_READY,
    summary="Readiness, model and provider",
)
def health(request: Request) -> HealthResponse | JSONResponse:
    """The readiness answer plus the model's name and version and the execution provider."""
    service = _ready_service(request)
    if service is None:
        return JSONResponse({"status": "not ready"}, status_code=503)
    card = service.model.card
    return HealthResponse.model_validate(
        {
            "status": "ready",
            "model": {"name": card.name, "version": card.version},
            "provider": service.model.engine.providers[0],
            "precision": service.model.engine.precision,
        }
    )
