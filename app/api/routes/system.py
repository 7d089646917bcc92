"""Health and version (PROTOCOL §6.1)."""

from __future__ import annotations

import platform
import sys

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import PlainTextResponse

from app.api.responses import JSONBytes
from app.cluster.readiness import Readiness

router = APIRouter(tags=["system"])

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class ReadinessView(BaseModel):
    ready: bool
    reasons: list[str] | None = None


class VersionInfo(BaseModel):
    """Go's version.Info field names."""

    Arch: str
    GoVersion: str
    OS: str
    Version: str


@router.get("/_ping", response_class=PlainTextResponse)
async def ping() -> PlainTextResponse:
    return PlainTextResponse("OK")


@router.get(
    "/readyz",
    response_class=JSONBytes,
    responses={200: {"model": ReadinessView, "description": "Ready for new work"},
               503: {"model": ReadinessView, "description": "Not ready: see reasons"}},
)
async def readyz(request: Request) -> JSONBytes:
    """Readiness for load balancers and Kubernetes: false while Redis is unreachable or while draining.

    Liveness is ``/_ping`` (dfget's own check), which stays "OK" in both cases.
    """
    readiness: Readiness = request.app.state.readiness
    if readiness.ready:
        return JSONBytes({"ready": True})
    return JSONBytes({"ready": False, "reasons": readiness.reasons()}, status_code=503)


@router.get("/version", response_class=JSONBytes, responses={200: {"model": VersionInfo}})
async def version(request: Request) -> JSONBytes:
    machine = platform.machine()
    return JSONBytes(
        {
            "Arch": _ARCH.get(machine, machine),
            "GoVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "OS": sys.platform,
            "Version": request.app.state.settings.version,
        }
    )
