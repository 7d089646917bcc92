"""A real Docker registry for preheat tests: Debian's ``docker-registry`` (distribution 2.8) processes on
loopback with filesystem storage in tmp, plus what tests need around it:

* :func:`start_registry` — ``docker-registry serve <config>`` on a free port (optionally ``auth: token``);
* :class:`Pusher` — pushes blobs and manifests over the registry HTTP API (POST+PUT uploads, manifest
  PUT), following a token challenge with Basic credentials when the registry wants one;
* :class:`CountingProxy` — an HTTP proxy in front of the registry that counts blob GETs;
* :class:`TokenServer` — a Docker token service (aiohttp) issuing RS256 JWTs with an ``x5c`` chain,
  signed with the ``openssl`` CLI (no Python crypto dependency).

Tests needing the binary are skipped, with the reason, when it is missing (tests/services/registry.sh
installs it as root).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import pytest
from aiohttp import ClientSession, web

from app.preheat.registry import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, parse_challenge
from tests import probe
from tests.cluster import free_port

REGISTRY_BIN = shutil.which("docker-registry")
needs_registry = pytest.mark.skipif(
    REGISTRY_BIN is None,
    reason="docker-registry (Debian's distribution 2.8) is not installed: run tests/services/registry.sh as root",
)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is needed to sign tokens")

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the registry process ---------------------------------------------------------------------------


@dataclass
class Registry:
    url: str  # http://127.0.0.1:<port>
    root: Path
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class TokenAuth:
    realm: str
    service: str
    issuer: str
    cert: Path


@contextmanager
def start_registry(workdir: Path, token: TokenAuth | None = None) -> Iterator[Registry]:
    """``docker-registry serve`` on a free loopback port; storage and log under ``workdir``."""
    assert REGISTRY_BIN is not None
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if token is not None:
        auth = (f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
                f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert}\n")
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: preheat-tests\n"
        f"{auth}"
    )
    log = workdir / "registry.log"
    with open(log, "wb") as handle:
        popen = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=handle, stderr=subprocess.STDOUT)
    registry = Registry(f"http://127.0.0.1:{port}", workdir, popen, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if probe.get(f"{registry.url}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{registry.tail()}")
            time.sleep(0.05)
        yield registry
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


# --- pushing images ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    name: str
    reference: str  # the tag pushed
    manifest_digest: str
    blobs: dict[str, bytes]  # digest -> content, config blobs included

    def manifest_url(self, base: str, reference: str | None = None) -> str:
        return f"{base}/v2/{self.name}/manifests/{reference or self.reference}"

    def blob_url(self, base: str, digest: str) -> str:
        return f"{base}/v2/{self.name}/blobs/{digest}"


class Pusher:
    """The registry HTTP API as a client pushes with it."""

    def __init__(self, base: str, username: str = "", password: str = "") -> None:
        self.base, self.username, self.password = base, username, password
        self.http = httpx.AsyncClient(timeout=30)
        self._token: dict[str, str] = {}

    async def __aenter__(self) -> Pusher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, name: str, content: bytes | None = None,
                       headers: dict[str, str] | None = None) -> httpx.Response:
        """One request; after a token challenge, fetch a push token with Basic credentials and retry."""
        while True:
            sent = dict(headers or {})
            if name in self._token:
                sent["Authorization"] = f"Bearer {self._token[name]}"
            response = await self.http.request(method, url, content=content, headers=sent)
            if response.status_code != 401 or name in self._token:
                return response
            scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
            assert scheme == "bearer", response.headers
            query = {"service": params["service"], "scope": f"repository:{name}:pull,push,delete"}
            token = await self.http.get(params["realm"], params=query, auth=(self.username, self.password))
            token.raise_for_status()
            self._token[name] = token.json()["token"]

    async def blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        started = await self._request("POST", f"{self.base}/v2/{name}/blobs/uploads/", name)
        assert started.status_code == 202, started.text
        location = httpx.URL(self.base).join(started.headers["location"])
        done = await self._request(
            "PUT", str(location.copy_merge_params({"digest": digest})), name, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return digest

    async def manifest(self, name: str, reference: str, document: dict[str, object], media_type: str) -> str:
        body = json.dumps(document).encode()
        put = await self._request("PUT", f"{self.base}/v2/{name}/manifests/{reference}", name, content=body,
                                  headers={"Content-Type": media_type})
        assert put.status_code == 201, put.text
        return digest_of(body)

    async def delete_blob(self, name: str, digest: str) -> None:
        deleted = await self._request("DELETE", f"{self.base}/v2/{name}/blobs/{digest}", name)
        assert deleted.status_code == 202, deleted.text

    async def image(self, name: str, tag: str, layers: list[bytes], oci: bool = False,
                    platform: str = "linux/amd64") -> PushedImage:
        """A single-platform image: a config blob and the layers, then its manifest under ``tag``."""
        os_name, _, arch = platform.partition("/")
        config = json.dumps({"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": []},
                             "nonce": os.urandom(8).hex()}).encode()
        blobs = {await self.blob(name, config): config}
        for layer in layers:
            blobs[await self.blob(name, layer)] = layer
        config_type, layer_type, manifest_type = (
            (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST) if oci else (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST)
        )
        document = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "size": len(config), "digest": digest_of(config)},
            "layers": [{"mediaType": layer_type, "size": len(layer), "digest": digest_of(layer)} for layer in layers],
        }
        digest = await self.manifest(name, tag, document, manifest_type)
        return PushedImage(name, tag, digest, blobs)

    async def index(self, name: str, tag: str, platforms: dict[str, list[bytes]]) -> dict[str, PushedImage]:
        """An OCI index over one OCI image per platform (each pushed by digest first)."""
        images, entries = {}, []
        for platform, layers in platforms.items():
            image = await self.image(name, f"{tag}-{platform.replace('/', '-')}", layers, oci=True, platform=platform)
            images[platform] = image
            os_name, _, arch = platform.partition("/")
            manifest = await self.http.get(image.manifest_url(self.base), headers=self._auth(name, OCI_MANIFEST))
            entries.append({"mediaType": OCI_MANIFEST, "size": len(manifest.content), "digest": image.manifest_digest,
                            "platform": {"architecture": arch, "os": os_name}})
        # A buildx-style attestation entry: never pulled to run a container, so never preheated.
        entries.append({**entries[0], "platform": {"architecture": "unknown", "os": "unknown"}})
        await self.manifest(name, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX)
        return images

    def _auth(self, name: str, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if name in self._token:
            headers["Authorization"] = f"Bearer {self._token[name]}"
        return headers


# --- counting proxy ------------------------------------------------------------------------------------


class CountingProxy:
    """Forwards everything to the registry and counts requests by (method, path)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: Counter[tuple[str, str]] = Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blob_gets(self) -> int:
        return sum(n for (method, path), n in self.counts.items() if method == "GET" and "/blobs/" in path)

    async def __aenter__(self) -> CountingProxy:
        self._session = ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        self.counts[(request.method, request.path)] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=await request.read(), allow_redirects=False) as upstream:
            body = await upstream.read()
            skip = ("content-length", "transfer-encoding", "connection", "content-encoding")
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in skip}
            return web.Response(status=upstream.status, body=body, headers=out)


# --- token service ------------------------------------------------------------------------------------------


async def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "openssl", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """``GET /token?service=..&scope=..`` with Basic ``username:password``; anonymous requests get 401."""

    workdir: Path
    username: str = "robot$preheat"
    password: str = "robot-secret-123"
    service: str = "preheat-test-registry"
    issuer: str = "preheat-test-issuer"
    port: int = 0
    issued: list[str] = field(default_factory=list)  # scopes granted, in order
    _runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def auth(self) -> TokenAuth:
        return TokenAuth(self.realm, self.service, self.issuer, self.workdir / "token.crt")

    async def __aenter__(self) -> TokenServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key, cert = self.workdir / "token.key", self.workdir / "token.crt"
        await _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                       "-days", "1", "-subj", "/CN=preheat-test-token")
        self._x5c = base64.b64encode(await _openssl("x509", "-in", str(cert), "-outform", "DER")).decode()
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def jwt(self, subject: str, scopes: list[str], ttl: int = 300) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + ttl, "nbf": now - 10,
                  "iat": now - 10, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = await _openssl("dgst", "-sha256", "-sign", str(self.workdir / "token.key"),
                                   stdin=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"

    async def _token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        scopes = request.query.getall("scope", [])
        self.issued.extend(scopes)
        token = await self.jwt(self.username, scopes)
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})
