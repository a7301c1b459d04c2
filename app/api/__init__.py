"""HTTP routes, one router per resource; ``router`` gathers them."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.api import health, jobs, model, models, segment, v2

ROUTERS = (segment.router, jobs.router, model.router, models.router, health.router, v2.router)
router = APIRouter()
for part in ROUTERS:
    router.include_router(part)


def methods_at(path: str) -> list[str]:
    """Every method routed at ``path``, for a 405's ``Allow`` (starlette's names only the
    first matching route's: ``Allow: POST`` at /jobs, which also has GET)."""
    found: set[str] = set()
    for part in ROUTERS:
        for route in part.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                found |= route.methods or set()
    return sorted(found)


__all__ = ["methods_at", "router"]
