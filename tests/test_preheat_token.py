"""Preheats of a registry behind token auth (``auth: token``, a JWT token service like Harbor's and
Docker Hub's): Harbor's own bearer token used as is, and the 401 challenge followed to the realm with
Basic credentials from the Open API args, a Basic header the caller passed, or the webhook robot."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.taskid import task_id
from tests.live import live_supernode
from tests.preheat_support import AUTH, assert_seeded, harbor_legacy_body, poll_legacy, poll_oapi
from tests.registry import Pusher, TokenServer, needs_openssl, needs_registry, start_registry

pytestmark = [needs_registry, needs_openssl, pytest.mark.slow]

SECRET = "hook-secret-0123456789"


def push_event(host: str, repo: str, digest: str) -> bytes:
    return orjson.dumps({"type": "PUSH_ARTIFACT", "occur_at": 1680000000, "operator": "admin", "event_data": {
        "resources": [{"digest": digest, "tag": "v1", "resource_url": f"{host}/{repo}:v1"}],
        "repository": {"name": repo.split("/")[1], "namespace": repo.split("/")[0], "repo_full_name": repo,
                       "repo_type": "private"}}})


async def test_preheats_follow_the_registry_token_challenge(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    async with TokenServer(tmp_path / "token") as tokens:
        with start_registry(tmp_path / "registry", tokens.auth) as registry:
            async with Pusher(registry.url, tokens.username, tokens.password) as push:
                images = [await push.image(f"private/app{i}", "v1", [os.urandom(200_000 + i), os.urandom(90_000)])
                          for i in range(4)]
                anonymous = await push.http.get(images[0].manifest_url(registry.url))
            harbor_jwt = await tokens.jwt("harbor-distributor", ["repository:private/app0:pull"])
            expired = await tokens.jwt("harbor-distributor", ["repository:private/app1:pull"], ttl=-120)
            basic = "Basic " + base64.b64encode(f"{tokens.username}:{tokens.password}".encode()).decode()
            robot = settings.model_copy(update={
                "harbor_webhook_secret": SECRET, "harbor_registry_scheme": "http",
                "harbor_registry_username": tokens.username, "harbor_registry_password": tokens.password,
                "harbor_registries": registry.host,  # the robot goes to this registry (and its host's realm) only
            })
            tokens.issued.clear()
            async with live_supernode(robot) as sn, httpx.AsyncClient(base_url=sn.api) as http:
                # Harbor 2.1–2.11: the distributor JWT Harbor minted is valid, no challenge needed.
                body = harbor_legacy_body(images[0].manifest_url(registry.url), "private/app0", "v1",
                                          images[0].manifest_digest, harbor_jwt)
                first = await poll_legacy(http, (await http.post("/preheats", content=body, headers=AUTH)).json()["ID"])
                after_harbor_token = list(tokens.issued)
                # Harbor 2.12+ with an expired JWT, plus Dragonfly2's username/password args.
                args = {"type": "image", "url": images[1].manifest_url(registry.url), "username": tokens.username,
                        "password": tokens.password, "headers": {"Authorization": f"Bearer {expired}"}}
                job = (await http.post("/oapi/v1/jobs", json={"type": "preheat", "args": args}, headers=AUTH)).json()
                second = await poll_oapi(http, job["id"])
                # Legacy API with a Basic header: the registry refuses Basic, the realm takes it.
                passed = {"type": "image", "url": images[2].manifest_url(registry.url),
                          "headers": {"Authorization": basic}}
                third = await poll_legacy(http, (await http.post("/preheats", json=passed, headers=AUTH)).json()["ID"])
                # A webhook: no credential in the payload, the configured robot account gets the token.
                hook = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": SECRET},
                                       content=push_event(registry.host, "private/app3", images[3].manifest_digest))
                fourth = await poll_legacy(http, hook.json()["preheats"][0]["ID"], path="/api/v1/preheats")
                # Without any credential the realm refuses: the job fails and says why.
                bare = {"type": "image", "url": images[0].manifest_url(registry.url)}
                refused = await poll_legacy(http, (await http.post("/api/v1/preheats", json=bare | {
                    "identifier": "no-credentials"}, headers=AUTH)).json()["ID"], path="/api/v1/preheats")

    assert anonymous.status_code == 401  # the registry really wants a token
    assert first["status"] == "SUCCESS" and after_harbor_token == []
    assert second["state"] == "SUCCESS"
    assert third["status"] == "SUCCESS"
    assert hook.status_code == 200 and fourth["status"] == "SUCCESS"
    for scope in ("repository:private/app1:pull", "repository:private/app2:pull", "repository:private/app3:pull"):
        assert scope in tokens.issued
    for image in images:
        for digest in image.blobs:
            assert_seeded(settings.seed_path, task_id(image.blob_url(registry.url, digest)), digest)
    assert refused["status"] == "FAILED" and "token realm" in refused["errorMsg"] and "401" in refused["errorMsg"]
