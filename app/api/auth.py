"""Bearer-token auth for the admin, REST and preheat APIs (the dfget API stays open).

Tokens come from ``DF_API_TOKENS`` (``name:token`` pairs); the matching name is the audit actor.
Harbor's OAUTH mode sends ``Authorization: Bearer <token>``. Harbor's BASIC mode is broken in Harbor
itself (it sends the first key of its auth map as the user name, in random order), so Basic credentials
are accepted when their password part equals a configured token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.config import Settings

ANONYMOUS = "anonymous"

log = logging.getLogger("app.api.auth")

# Only documents the scheme (the "Authorize" button of /docs); the header is read below, Basic included.
_BEARER_DOC = HTTPBearer(auto_error=False, description="A token of DF_API_TOKENS (name:token pairs).")


class InsecureApiError(RuntimeError):
    """Cluster mode without tokens and without the explicit opt-out."""


def ensure_api_protected(settings: Settings) -> None:
    """Fail fast: a cluster replica must not expose its admin API open by accident."""
    if settings.embedded or settings.tokens or settings.insecure_open_api:
        return
    message = (
        "refusing to start: cluster mode (DF_REDIS_URL is set) needs DF_API_TOKENS=name:token[,name:token] "
        "for the admin and REST API, or DF_INSECURE_OPEN_API=true to run that API without authentication"
    )
    log.error(message)
    raise InsecureApiError(message)


def _presented_secret(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[2] or None
    return None


def token_name(settings: Settings, header: str) -> str | None:
    """The name of the token in an Authorization header, compared in constant time; None if no match."""
    secret = _presented_secret(header)
    if secret is None:
        return None
    found: str | None = None
    for token, name in settings.tokens.items():
        # Compare against every token so the time taken does not tell which one nearly matched.
        if hmac.compare_digest(token.encode(), secret.encode()):
            found = name
    return found


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _open_api(settings: Settings) -> bool:
    """No tokens configured: open in embedded mode, or in cluster mode only when explicitly allowed."""
    return not settings.tokens and (settings.embedded or settings.insecure_open_api)


async def require_admin(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER_DOC)] = None
) -> str:
    """For every call that changes something. Returns the audit actor."""
    settings = _settings(request)
    if _open_api(settings):
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    if not header:
        raise HTTPException(401, "missing Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
    name = token_name(settings, header)
    if name is None:
        raise HTTPException(403, "invalid token")
    return name


async def require_reader(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER_DOC)] = None
) -> str:
    """For read-only calls; public when DF_PUBLIC_READ_API is set."""
    if _settings(request).public_read_api:
        return ANONYMOUS
    return await require_admin(request)


Admin = Annotated[str, Depends(require_admin)]
Reader = Annotated[str, Depends(require_reader)]
