"""The operations routes of issue 8 (live limits, overview, task swarm view, dashboard), in one router
so that app/main.py includes them with one line."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import dashboard, live_limits, overview, preheat_ops

router = APIRouter()
router.include_router(live_limits.router)
router.include_router(overview.router)
router.include_router(preheat_ops.router)
router.include_router(dashboard.router)
