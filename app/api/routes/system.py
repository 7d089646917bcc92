"""Health and version (PROTOCOL §6.1)."""

from __future__ import annotations

import platform
import sys

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse

from app.api.responses import JSONBytes

router = APIRouter(tags=["system"])

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@router.get("/_ping", response_class=PlainTextResponse)
async def ping() -> PlainTextResponse:
    return PlainTextResponse("OK")


@router.get("/version", response_class=JSONBytes)
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
