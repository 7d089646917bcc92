"""Harbor webhook receiver (HARBOR.md §4): a pushed artifact is preheated at once.

Protected by ``DF_HARBOR_WEBHOOK_SECRET``, compared in constant time with the ``Authorization`` header
(Harbor copies the policy's "auth header" there verbatim). The payload carries no pull credential:
the registry is reached with the robot account ``DF_HARBOR_REGISTRY_USERNAME``/``_PASSWORD``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.errors import ApiError
from app.api.responses import JSONBytes
from app.api.route_index import OWN_AUTH
from app.api.routes.preheat import client_ip, preheat_service
from app.audit.events import AuditEvent
from app.core.config import Settings
from app.preheat import docs
from app.preheat.model import PreheatRequest
from app.preheat.service import PreheatRefused
from app.preheat.webhook import WebhookError, parse_event, secret_matches

ACTOR = "harbor-webhook"

router = APIRouter(tags=["harbor"])


async def _audit(request: Request, outcome: str, **detail: Any) -> None:
    event = AuditEvent(actor=ACTOR, action="webhook.received", outcome=outcome, source_ip=client_ip(request),
                       detail=detail)
    await request.app.state.audit.record(event)


def _error(status: int, message: str) -> JSONBytes:
    return JSONBytes({"code": status, "message": message}, status_code=status)


@router.post(
    "/api/v1/webhooks/harbor", response_class=JSONBytes,
    responses={200: {"model": docs.WebhookAnswer},
               400: {"model": ApiError, "description": "Not a usable event, or every preheat was refused"},
               401: {"model": ApiError, "description": "No Authorization header"},
               403: {"model": ApiError, "description": "Wrong secret, or webhooks disabled"}},
    openapi_extra={OWN_AUTH: "tests/test_harbor_webhook.py", "requestBody": docs.WEBHOOK_BODY},
)
async def harbor_webhook(request: Request) -> JSONBytes:
    settings: Settings = request.app.state.settings
    presented = request.headers.get("authorization", "")
    if not settings.harbor_webhook_secret:
        await _audit(request, "refused", reason="DF_HARBOR_WEBHOOK_SECRET is not set")
        return _error(403, "Harbor webhooks are disabled: set DF_HARBOR_WEBHOOK_SECRET and use it as the "
                           "policy's auth header")
    if not presented:
        await _audit(request, "refused", reason="no Authorization header")
        return _error(401, "missing Authorization header (the webhook policy's auth header)")
    if not secret_matches(settings.harbor_webhook_secret, presented):
        await _audit(request, "refused", reason="wrong secret")
        return _error(403, "invalid webhook secret")
    try:
        event = parse_event(await request.body(), settings.harbor_registry_scheme,
                            settings.harbor_webhook_max_resources)
    except WebhookError as exc:
        await _audit(request, "failed", reason=exc.message)
        return _error(400, exc.message)
    if event is None:
        await _audit(request, "ignored")
        return JSONBytes({"preheats": [], "message": "not a push event; ignored"})
    started, refused = [], []
    for url in event.manifest_urls:
        try:
            pid = await preheat_service(request).create(
                PreheatRequest(type="image", url=url), ACTOR, "webhook", client_ip(request)
            )
            started.append({"ID": pid, "url": url})
        except PreheatRefused as exc:
            refused.append({"url": url, "message": exc.message})
    await _audit(request, "ok" if started else "refused", type=event.type, operator=event.operator,
                 preheats=started, refused=refused)
    if not started:
        return _error(400, "; ".join(item["message"] for item in refused))
    return JSONBytes({"preheats": started, "refused": refused})
