"""What routes depend on: the model repository, a model's Service and the admission queue,
from ``app.state``.

All are made in the lifespan (app/main.py) and reach the routes through
``Annotated`` dependencies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from app.api.admission import Admission
from app.errors import UnavailableError
from app.models import Repository
from app.service import Service

NOT_READY_RETRY_S = 5


def get_models(request: Request) -> Repository:
    """The repository once start-up is over, or 503."""
    models: Repository | None = getattr(request.app.state, "models", None)
    if models is None:
        raise UnavailableError(
            "not ready: the model is still loading; retry shortly", NOT_READY_RETRY_S
        )
    return models


def get_service(request: Request) -> Service:
    """The service's primary model (the default), or 503 while it is not ready."""
    service = get_models(request).primary()
    if service is None or not service.ready:
        raise UnavailableError(
            "not ready: the model is still loading; retry shortly", NOT_READY_RETRY_S
        )
    return service


ModelQuery = Annotated[
    str | None,
    Query(
        description="the model (GET /models); default: UNET_DEFAULT_MODEL, else the only one",
        max_length=200,
    ),
]


def get_model_service(request: Request, model: ModelQuery = None) -> Service:
    """The Service of the model the request names (``model=``), else the default; 422 for an
    unknown name, listing the models; 503 while it is not warm."""
    return get_models(request).get(model)


def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


ModelsDep = Annotated[Repository, Depends(get_models)]
ServiceDep = Annotated[Service, Depends(get_service)]
ModelServiceDep = Annotated[Service, Depends(get_model_service)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
