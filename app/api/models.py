"""``GET /models``: every model of the repository, whether it answers, and its card."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.auth import Authorized
from app.api.deps import ModelsDep
from app.api.errors import documented
from app.api.schemas import ModelListing, ModelsResponse

router = APIRouter(tags=["model"])


@router.get(
    "/models",
    response_model=ModelsResponse,
    response_model_exclude_none=True,
    summary="The models served",
    dependencies=[Authorized],
    responses=documented(
        {
            401: "API keys are configured; none or a wrong one",
            422: "a bad query parameter",
            503: "start-up is not over; with `modality`, a model is still loading",
        }
    ),
)
def models(
    repository: ModelsDep,
    modality: Annotated[
        str | None,
        Query(
            max_length=64,
            description="a DICOM modality (CT): `chosen` names the model for its series",
        ),
    ] = None,
) -> ModelsResponse:
    """Each model by name: listed from the moment its file is seen, ``ready`` once warm;
    ``version`` and ``card`` those of the version that answers; ``error`` why the file
    last seen could not be loaded. With ``modality``: the model a DICOM series of that
    modality goes to (``chosen``; null when none fits) and why (``reason``)."""
    default = repository.default_name()
    listed = []
    for entry in repository.listing():
        service = entry.service
        card = service.model.card if service is not None else None
        listed.append(
            ModelListing(
                name=entry.name,
                version=card.version if card is not None else None,
                ready=service is not None and service.ready,
                default=entry.name == default,
                card=card.model_dump() if card is not None else None,
                error=entry.error,
            )
        )
    response = ModelsResponse(models=listed, default=default)
    if modality is not None:
        response.chosen, response.reason = repository.choose(modality)
    return response
