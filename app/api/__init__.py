"""HTTP routes, one router per resource; ``router`` gathers them."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import health, model, segment

router = APIRouter()
router.include_router(segment.router)
router.include_router(model.router)
router.include_router(health.router)

__all__ = ["router"]
