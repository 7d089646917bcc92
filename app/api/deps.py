"""Request-scoped access to the process-wide services built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.bridge.service import PeerBridge


def get_bridge(request: Request) -> PeerBridge:
    bridge: PeerBridge = request.app.state.bridge
    return bridge


BridgeDep = Annotated[PeerBridge, Depends(get_bridge)]
