"""``GET /model``: the model card, the file's SHA-256, the providers and the tiling in use."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.auth import Authorized
from app.api.deps import ModelServiceDep
from app.api.errors import documented
from app.api.schemas import ModelInfo

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The model being served",
    dependencies=[Authorized],
    responses=documented(
        {
            401: "API keys are configured; none or a wrong one",
            422: "an unknown model, or none named and no default",
            503: "not ready",
        }
    ),
)
def model_info(service: ModelServiceDep) -> ModelInfo:
    """Name, version, classes, geometry, normalisation, activation, providers and tiling."""
    model, predictor = service.model, service.predictor
    tile_size, batch_size = predictor.tile_size, predictor.batch_size
    return ModelInfo.model_validate(
        {
            **model.card.summary(),
            "model": service.name,
            "card": model.card_source,
            "sha256": model.engine.sha256,
            "providers": model.engine.providers,
            "precision": model.engine.precision,
            "tiling": {
                "tile_size": tile_size,
                "batch_size": batch_size,
                "fixed_shape": predictor.fixed_shape,
            },
        }
    )
