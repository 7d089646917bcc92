"""What df-swarm reads back from the supernode's REST API (ours; a Go supernode has none)."""

from __future__ import annotations

import httpx

from app.swarm.wire import node_base_url


async def task_traffic(node: str, task_id: str, token: str = "") -> dict[str, int] | None:
    """The task's byte split (``traffic``: peer/seed/source) as ``GET /api/v1/tasks/{id}`` shows it.

    None when the node has no such API, wants a token we do not have, or forgot the task: the report
    then only has the peers' own count.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(f"{node_base_url(node)}/api/v1/tasks/{task_id}", headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        traffic = response.json().get("traffic")
    except ValueError:
        return None
    if not isinstance(traffic, dict):
        return None
    return {k: int(v) for k, v in traffic.items() if isinstance(v, int)}
