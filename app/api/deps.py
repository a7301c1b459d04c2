"""What routes depend on: the loaded Service and the admission queue, from ``app.state``.

Both are made in the lifespan (app/main.py) and reach the routes through
``Annotated`` dependencies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.admission import Admission
from app.errors import UnavailableError
from app.service import Service

NOT_READY_RETRY_S = 5


def get_service(request: Request) -> Service:
    """The ready service, or 503 (the model is still loading or warming up)."""
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        raise UnavailableError(
            "not ready: the model is still loading; retry shortly", NOT_READY_RETRY_S
        )
    return service


def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


ServiceDep = Annotated[Service, Depends(get_service)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
