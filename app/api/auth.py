"""API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, when UNET_API_KEYS is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import ServiceDep
from app.errors import UnauthorizedError

_bearer = HTTPBearer(auto_error=False, description="an API key from UNET_API_KEYS")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key from UNET_API_KEYS"
)


def key_matches(given: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit).

    Surrounding whitespace is not part of a key, in either header (HTTP servers
    strip it from some header values and not others).
    """
    given = given.strip() if given else ""
    if not given:
        return False
    candidate = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key.encode())
    return found


def require_api_key(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """401 unless UNET_API_KEYS is empty or the request carries one of its keys."""
    keys = service.settings.api_keys
    if not keys:
        return
    token = bearer.credentials if bearer is not None else None
    if key_matches(token, keys) or key_matches(api_key, keys):
        return
    raise UnauthorizedError(
        "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
    )


Authorized = Depends(require_api_key)
