"""The webhook robot account goes only where it is configured to go (issue 7 finding 4): a registry in
DF_HARBOR_REGISTRIES, and a token realm on such a host or in DF_HARBOR_TOKEN_REALMS. A real
docker-registry whose challenge names a foreign realm, and a foreign "registry", both get nothing; the
foreign server records every Authorization header that reaches it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis

from app.core.config import Settings
from app.preheat.registry import CredentialScope, ImageRef, RegistryError
from tests.cluster import free_port
from tests.live import live_supernode
from tests.preheat_support import poll_legacy
from tests.registry import TokenAuth, TokenServer, needs_openssl, needs_registry, start_registry
from tests.test_preheat_token import SECRET, push_event

DIGEST = "sha256:" + "ab" * 32
FOREIGN_HOST = "127.0.0.2"  # another loopback address: another host as far as the scope is concerned


@dataclass
class Recorder:
    """A foreign server answering every GET with 401 and a Basic challenge, noting what it was sent."""

    port: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization or "")

    @property
    def authority(self) -> str:
        return f"{FOREIGN_HOST}:{self.port}"

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization", "")))
        return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                 headers={"WWW-Authenticate": 'Basic realm="foreign"'})


@asynccontextmanager
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder(port=free_port())
    app = web.Application()
    app.router.add_get("/{tail:.*}", rec._any)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, FOREIGN_HOST, rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


def test_scope_matching() -> None:
    scope = CredentialScope.parse("Harbor.Example.com, reg.local:5000", "auth.example.net:8443")
    harbor = ImageRef("https", "harbor.example.com:443", "a/b", "v1")
    local = ImageRef("http", "reg.local:5000", "a", "v")
    scope.check_registry(harbor)  # no port in the entry: any port
    scope.check_registry(local)
    scope.check_realm(harbor, "https://harbor.example.com/service/token")  # the registry's own host
    scope.check_realm(local, "https://auth.example.net:8443/token")
    for ref in (ImageRef("http", "reg.local:5001", "a", "v"), ImageRef("http", "evil.example/reg.local", "a", "v")):
        with pytest.raises(RegistryError, match="DF_HARBOR_REGISTRIES"):
            scope.check_registry(ref)
    for realm in ("https://auth.example.net/token", "https://evil.example/harbor.example.com", "not a url", ""):
        with pytest.raises(RegistryError, match="DF_HARBOR_TOKEN_REALMS"):
            scope.check_realm(harbor, realm)
    with pytest.raises(RegistryError, match="none is configured"):
        CredentialScope.parse("", "").check_registry(harbor)


@needs_registry
@needs_openssl
@pytest.mark.slow
async def test_robot_account_goes_to_no_unconfigured_registry_or_realm(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    async with TokenServer(tmp_path / "token") as tokens, recorder() as foreign:
        # A real registry, configured like a hostile one: its challenge names the foreign realm.
        hostile = TokenAuth(f"http://{foreign.authority}/token", tokens.service, tokens.issuer, tokens.auth.cert)
        with start_registry(tmp_path / "registry", hostile) as registry:
            robot = settings.model_copy(update={
                "harbor_webhook_secret": SECRET, "harbor_registry_scheme": "http",
                "harbor_registry_username": tokens.username, "harbor_registry_password": tokens.password,
                "harbor_registries": registry.host,
            })

            async def hook(http: httpx.AsyncClient, host: str) -> dict[str, object]:
                answer = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": SECRET},
                                         content=push_event(host, "private/app", DIGEST))
                assert answer.status_code == 200, answer.text
                return await poll_legacy(http, answer.json()["preheats"][0]["ID"], path="/api/v1/preheats")

            async with live_supernode(robot) as sn, httpx.AsyncClient(base_url=sn.api) as http:
                foreign_realm = await hook(http, registry.host)
                foreign_registry = await hook(http, foreign.authority)
            refused = list(foreign.seen)
            allowed = robot.model_copy(update={"harbor_token_realms": foreign.authority})
            async with live_supernode(allowed) as sn, httpx.AsyncClient(base_url=sn.api) as http:
                await hook(http, registry.host)  # now the realm is allowlisted: the robot goes there
    assert foreign_realm["status"] == "FAILED" and "DF_HARBOR_TOKEN_REALMS" in str(foreign_realm["errorMsg"])
    assert registry.host in str(foreign_realm["errorMsg"]) and "not sent" in str(foreign_realm["errorMsg"])
    assert foreign_registry["status"] == "FAILED" and "DF_HARBOR_REGISTRIES" in str(foreign_registry["errorMsg"])
    # The foreign registry was asked for the manifest (anonymously), the foreign realm never.
    assert refused and all(auth == "" for _path, auth in refused), refused
    assert all(path.startswith("/v2/") for path, _auth in refused), refused
    basic = "Basic " + base64.b64encode(f"{tokens.username}:{tokens.password}".encode()).decode()
    assert ("/token", basic) in foreign.seen[len(refused):]  # the check, not the setup, stopped it before
