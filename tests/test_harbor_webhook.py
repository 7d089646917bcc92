"""The Harbor webhook receiver: both payload formats of HARBOR.md §4, its secret, and the preheats it
starts against a real registry (their audit rows in PostgreSQL name the webhook)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.preheat.webhook import WebhookError, parse_event
from app.protocol.taskid import task_id
from tests.live import live_supernode
from tests.postgres import rows
from tests.preheat_support import AUTH, assert_seeded, at_least, audit_trail, poll_legacy
from tests.registry import Pusher, Registry, needs_registry, start_registry

SECRET = "hook-secret-0123456789"
DIGEST = "sha256:" + "ab" * 32


def default_event(resource_url: str, repo: str, digest: str = DIGEST, tag: str = "v1",
                  kind: str = "PUSH_ARTIFACT") -> dict[str, Any]:
    namespace, _, name = repo.partition("/")
    return {"type": kind, "occur_at": 1680000000, "operator": "admin", "event_data": {
        "resources": [{"digest": digest, "tag": tag, "resource_url": resource_url}],
        "repository": {"date_created": 1679990000, "name": name, "namespace": namespace, "repo_full_name": repo,
                       "repo_type": "private"}}}


def cloud_event(resource_url: str, repo: str, digest: str = DIGEST) -> dict[str, Any]:
    data = default_event(resource_url, repo, digest)["event_data"]
    return {"specversion": "1.0", "id": "e1", "source": "/projects/1/webhook/policies/1",
            "type": "harbor.artifact.pushed", "datacontenttype": "application/json", "time": "2024-01-01T00:00:00Z",
            "data": data, "operator": "admin", "requestid": "r1"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (default_event("harbor.example.com/library/busybox:latest", "library/busybox"),
         f"https://harbor.example.com/v2/library/busybox/manifests/{DIGEST}"),
        # v2.1 builds repo:sha256:… for digest-only pushes; later versions repo@sha256:…
        (default_event(f"harbor.example.com:8443/library/busybox:{DIGEST}", "library/busybox", tag=DIGEST),
         f"https://harbor.example.com:8443/v2/library/busybox/manifests/{DIGEST}"),
        (cloud_event(f"harbor.example.com/proj/sub/app@{DIGEST}", "proj/sub/app"),
         f"https://harbor.example.com/v2/proj/sub/app/manifests/{DIGEST}"),
        (default_event("harbor.example.com/library/busybox:1.36", "library/busybox", digest=""),
         "https://harbor.example.com/v2/library/busybox/manifests/1.36"),
    ],
)
def test_push_payloads_become_manifest_urls(payload: dict[str, Any], expected: str) -> None:
    event = parse_event(orjson.dumps(payload), "https")
    assert event is not None and event.manifest_urls == (expected,) and event.operator == "admin"


def test_other_events_are_ignored_and_bad_payloads_refused() -> None:
    assert parse_event(orjson.dumps(default_event("h/a/b:c", "a/b", kind="DELETE_ARTIFACT")), "https") is None
    for bad in (b"{", b"[]", orjson.dumps({"type": "PUSH_ARTIFACT"}),
                orjson.dumps({"type": "PUSH_ARTIFACT", "event_data": {"resources": []}})):
        with pytest.raises(WebhookError):
            parse_event(bad, "https")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@needs_registry
@pytest.mark.slow
async def test_push_events_of_both_formats_preheat_the_image(
    settings: Settings, redis: Redis, registry: Registry, pg_db: str
) -> None:
    hooked = settings.model_copy(update={"harbor_webhook_secret": SECRET, "harbor_registry_scheme": "http",
                                         "database_url": pg_db})
    async with Pusher(registry.url) as push:
        plain = await push.image("library/hooked", "v1", [os.urandom(120_000), os.urandom(80_000)])
        cloud = await push.image("library/clouded", "v2", [os.urandom(110_000)], oci=True)
    events = [
        (default_event(f"{registry.host}/library/hooked:v1", "library/hooked", plain.manifest_digest),
         "application/json"),
        (cloud_event(f"{registry.host}/library/clouded@{cloud.manifest_digest}", "library/clouded",
                     cloud.manifest_digest), "application/cloudevents+json"),
    ]
    async with live_supernode(hooked) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        answers, finals = [], []
        for payload, content_type in events:
            answer = await http.post("/api/v1/webhooks/harbor", content=orjson.dumps(payload),
                                     headers={"Authorization": SECRET, "Content-Type": content_type})
            answers.append(answer)
            finals.append(await poll_legacy(http, answer.json()["preheats"][0]["ID"], path="/api/v1/preheats"))
        trail = await audit_trail(http, redis, at_least("preheat.status", 4))
        # And in the audit table itself, written by the replica's consumer.
        for _ in range(300):
            stored = await rows(pg_db, "SELECT actor, action, outcome FROM audit_events WHERE actor = 'harbor-webhook'")
            if sum(r["action"] == "preheat.status" for r in stored) >= 4:
                break
            await asyncio.sleep(0.1)

    assert sorted((r["action"], r["outcome"]) for r in stored if r["action"] == "webhook.received") == [
        ("webhook.received", "ok"), ("webhook.received", "ok")]
    assert sum(r["action"] == "preheat.status" for r in stored) == 4
    for answer, image in zip(answers, (plain, cloud), strict=True):
        (started,) = answer.json()["preheats"]
        assert answer.status_code == 200
        assert started["url"] == image.manifest_url(registry.url, image.manifest_digest)
        assert started["ID"] == task_id(started["url"])
    assert [f["status"] for f in finals] == ["SUCCESS", "SUCCESS"]
    for image in (plain, cloud):
        for digest in image.blobs:
            assert_seeded(settings.seed_path, task_id(image.blob_url(registry.url, digest)), digest)
    received = [e for e in trail if e["action"] == "webhook.received"]
    assert [e["detail"]["type"] for e in received] == ["PUSH_ARTIFACT", "harbor.artifact.pushed"]
    assert all(e["actor"] == "harbor-webhook" and e["outcome"] == "ok" for e in received)
    mine = [e for e in trail if e["action"].startswith("preheat.")]
    assert mine and all(e["actor"] == "harbor-webhook" for e in mine)
    assert [e["detail"]["status"] for e in mine if e["action"] == "preheat.status"] == [
        "RUNNING", "SUCCESS", "RUNNING", "SUCCESS"]


async def test_the_webhook_secret_is_required(settings: Settings, redis: Redis) -> None:
    body = orjson.dumps(default_event("127.0.0.1:5000/library/a:v1", "library/a"))
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        unset = await http.post("/api/v1/webhooks/harbor", content=body, headers={"Authorization": SECRET})
    hooked = settings.model_copy(update={"harbor_webhook_secret": SECRET})
    async with live_supernode(hooked) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        missing = await http.post("/api/v1/webhooks/harbor", content=body)
        wrong = await http.post("/api/v1/webhooks/harbor", content=body, headers={"Authorization": SECRET[:-1]})
        token = await http.post("/api/v1/webhooks/harbor", content=body, headers=AUTH)  # an API token is no secret
        bad = await http.post("/api/v1/webhooks/harbor", content=b"{", headers={"Authorization": SECRET})
        ignored = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": SECRET}, content=orjson.dumps(
            default_event("127.0.0.1:5000/library/a:v1", "library/a", kind="PULL_ARTIFACT")))
        trail = await audit_trail(http, redis, at_least("webhook.received", 5))
    assert unset.status_code == 403 and "DF_HARBOR_WEBHOOK_SECRET" in unset.json()["message"]
    assert missing.status_code == 401 and wrong.status_code == 403 and token.status_code == 403
    assert bad.status_code == 400 and ignored.status_code == 200 and ignored.json()["preheats"] == []
    outcomes = [e["outcome"] for e in trail if e["action"] == "webhook.received"]
    assert outcomes.count("refused") >= 3 and "ignored" in outcomes
