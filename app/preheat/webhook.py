"""Harbor webhook payloads (HARBOR.md §4) → the manifest URLs to preheat.

Two formats carry the same ``event_data``: Harbor's default (``{"type":"PUSH_ARTIFACT", ...}``) and,
from v2.8, CloudEvents (``{"type":"harbor.artifact.pushed", "data": {...}}``). ``resource_url`` is
``<ext host>/<repo>:<tag>``, ``<ext host>/<repo>@sha256:…`` or (v2.1) ``<ext host>/<repo>:sha256:…``,
without a scheme; the registry scheme comes from ``DF_HARBOR_REGISTRY_SCHEME``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from app.protocol.wire import has_usable_host

PUSH_TYPES = frozenset({"PUSH_ARTIFACT", "harbor.artifact.pushed"})


class WebhookError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PushEvent:
    type: str
    operator: str
    manifest_urls: tuple[str, ...]


def secret_matches(expected: str, presented: str) -> bool:
    """Harbor copies the policy's auth header verbatim into ``Authorization``; compare in constant time."""
    return hmac.compare_digest(expected.encode(), presented.encode())


def parse_event(body: bytes, scheme: str, max_resources: int = 50) -> PushEvent | None:
    """The push event's manifest URLs; None for event types that are not a push (ignored, not errors).

    More than ``max_resources`` resources is an error, before any preheat starts (one event once
    started 1,000 of them)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookError(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise WebhookError("payload must be a JSON object")
    kind = str(doc.get("type") or "")
    if kind not in PUSH_TYPES:
        return None
    data = doc.get("data") if "specversion" in doc or kind.startswith("harbor.") else doc.get("event_data")
    if not isinstance(data, dict):
        raise WebhookError("push event without event data")
    repository = data.get("repository")
    repo_name = str(repository.get("repo_full_name") or "") if isinstance(repository, dict) else ""
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise WebhookError("push event without resources")
    if len(resources) > max_resources:
        raise WebhookError(f"push event with {len(resources)} resources, over the limit of {max_resources} "
                           "(DF_HARBOR_WEBHOOK_MAX_RESOURCES)")
    urls = tuple(dict.fromkeys(_manifest_url(r, repo_name, scheme) for r in resources))
    return PushEvent(kind, str(doc.get("operator") or ""), urls)


def _manifest_url(resource: Any, repo_name: str, scheme: str) -> str:
    if not isinstance(resource, dict):
        raise WebhookError("a resource is not an object")
    resource_url = str(resource.get("resource_url") or "")
    if "://" in resource_url:  # not what Harbor sends, but a scheme there is unambiguous
        scheme, _, resource_url = resource_url.partition("://")
    host, repo, ref = _split_resource_url(resource_url, repo_name)
    digest = str(resource.get("digest") or "")
    # Prefer the digest: it names exactly what was pushed, even if the tag moves before we fetch.
    reference = digest if digest.startswith("sha256:") else (ref or str(resource.get("tag") or ""))
    if not host or not repo or not reference:
        raise WebhookError(f"cannot tell registry, repository and reference from resource_url {resource_url!r}")
    url = f"{scheme}://{host}/v2/{repo}/manifests/{reference}"
    if not has_usable_host(url):
        raise WebhookError(f"resource_url {resource_url!r} has an invalid registry host")
    return url


def _split_resource_url(resource_url: str, repo_name: str) -> tuple[str, str, str]:
    """``host[:port]/<repo>(:tag|@digest|:sha256:digest)`` → (host, repo, reference)."""
    if repo_name:
        marker = resource_url.find("/" + repo_name)
        if marker > 0:
            rest = resource_url[marker + 1 + len(repo_name):]
            return resource_url[:marker], repo_name, rest[1:] if rest[:1] in (":", "@") else ""
    host, _, path = resource_url.partition("/")
    if "@" in path:
        repo, _, ref = path.partition("@")
        return host, repo, ref
    last_slash = path.rfind("/")
    colon = path.find(":", last_slash + 1)
    if colon < 0:
        return host, path, ""
    return host, path[:colon], path[colon + 1:]
