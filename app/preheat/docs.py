"""What the preheat and webhook routes declare in the OpenAPI document: their answers (pydantic models,
the shapes app.preheat.views builds) and their request bodies.

The bodies are read by hand (app.preheat.requests, app.preheat.webhook), not by these schemas: Go
matched keys case-insensitively (PROTOCOL §2.3) and Harbor sends keys no schema names. So a body schema
here documents the canonical spelling, allows any other key, and the parsers stay the only judges.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.api.bodies import any_case
from app.preheat.requests import MAX_CONCURRENT_COUNT, MAX_TIMEOUT_NS


class PreheatCreated(BaseModel):
    ID: str


class LegacyPreheatTask(BaseModel):
    """``GET /preheats``: the legacy internal task record."""

    ID: str
    URL: str
    Type: str
    Filter: str
    Identifier: str
    Headers: dict[str, str]
    ParentID: str
    Children: list[str]
    Status: str
    StartTime: int
    FinishTime: int
    ErrorMsg: str


class LayerProgress(BaseModel):
    url: str
    digest: str
    taskId: str
    status: str
    seededBytes: int
    totalBytes: int
    error: str


class PreheatInfo(BaseModel):
    """``GET /preheats/{id}``; the ``/api/v1`` copy adds ``progress``."""

    ID: str
    status: str
    startTime: str
    finishTime: str
    errorMsg: str
    progress: list[LayerProgress] | None = None


class OapiMessage(BaseModel):
    message: str


class OapiErrors(BaseModel):
    errors: Any = Field(description="The problem, as text (Dragonfly2's manager answers the same way).")


class OapiJob(BaseModel):
    """Dragonfly2's job; ``args`` echoes the request's args (headers' secrets masked)."""

    id: int
    created_at: str
    updated_at: str
    is_del: int
    task_id: str
    bio: str
    type: str
    state: str
    args: dict[str, Any]
    result: dict[str, Any]
    user_id: int
    scheduler_clusters: list[dict[str, Any]]
    seed_peer_clusters: list[dict[str, Any]]


class StartedPreheat(BaseModel):
    ID: str
    url: str


class RefusedPreheat(BaseModel):
    url: str
    message: str


class WebhookAnswer(BaseModel):
    preheats: list[StartedPreheat]
    refused: list[RefusedPreheat] | None = None
    message: str | None = None


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_HEADERS = {"type": "object", "additionalProperties": True,
            "description": "Sent to the source with every request; values that are not strings are accepted."}
_URL = {"type": "string", "minLength": 3, "description": "http(s) URL: a file, or an image manifest for type image."}
_TYPE = {"type": "string", "enum": ["file", "image"], "description": "Any case."}

LEGACY_PREHEAT_BODY = _body(any_case({
    "type": "object", "required": ["type", "url"], "additionalProperties": True,
    "properties": {"type": _TYPE, "url": _URL, "filter": {"type": "string"}, "filteredQueryParams": {"type": "string"},
                   "identifier": {"type": "string"}, "headers": _HEADERS},
}))

OAPI_JOB_BODY = _body(any_case(spelled_required=False, schema={
    "type": "object", "required": ["type", "args"], "additionalProperties": True,
    "properties": {
        "type": {"type": "string", "enum": ["preheat"]},
        "args": any_case(spelled_required=False, schema={
            "type": "object", "required": ["type", "url"], "additionalProperties": True,
            "properties": {
                "type": _TYPE, "url": _URL, "tag": {"type": "string"}, "filtered_query_params": {"type": "string"},
                "headers": _HEADERS, "scope": {"type": "string"}, "platform": {"type": "string"},
                "username": {"type": "string"}, "password": {"type": "string"},
                "concurrent_count": {"type": "integer", "minimum": 0, "maximum": MAX_CONCURRENT_COUNT},
                "timeout": {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT_NS,
                            "description": "Nanoseconds (Go time.Duration)."},
            },
        }),
        "scheduler_cluster_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    },
}))

# The receiver reads every field with str() and ignores an event that is not a push, whatever else it
# holds; so the leaves are described, not typed (a typed leaf would be a promise the server does not keep).
_EVENT_DATA = {"type": "object", "additionalProperties": True, "properties": {
    "resources": {"description": "Push events: a non-empty array of objects with resource_url, digest, tag."},
    "repository": {"description": "An object whose repo_full_name tells the repository from the host."},
}}
WEBHOOK_BODY = _body({
    "type": "object", "additionalProperties": True,
    "description": "Harbor's default payload (event_data) or a CloudEvent (data); only push events start preheats.",
    "properties": {"type": {"description": "PUSH_ARTIFACT or harbor.artifact.pushed start preheats."},
                   "operator": {}, "specversion": {}, "event_data": {"description": "Harbor's default format."},
                   "data": {"description": "CloudEvents (Harbor 2.8+)."}},
})
