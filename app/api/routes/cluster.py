"""``GET /api/v1/cluster``: the live view of the whole deployment (ours; Go had one process)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.auth import Reader
from app.api.errors import ERRORS
from app.cluster.heartbeat import replica_id
from app.cluster.models import ClusterView
from app.cluster.service import ClusterService

router = APIRouter(tags=["cluster"], responses=ERRORS)


@router.get("/api/v1/cluster", response_model=ClusterView, response_model_exclude_none=True)
async def cluster(request: Request, _: Reader) -> ClusterView:
    """Live replicas (heartbeats), seeding workers (Celery ping), Redis and Postgres health, seed-cache disk."""
    state = request.app.state
    service = ClusterService(
        state.redis, state.settings, state.storage, state.bridge.dispatcher,
        replica_id(state.settings, state.role.replica_pid),
        getattr(state, "audit_runtime", None),
    )
    return await service.view()
