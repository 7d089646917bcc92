"""Docker registry (distribution API v2) client for image preheats: manifests, token auth, blob list.

Everything goes through the source client (app.cdn.source.send_get), so the source policy checks
every request, including token realms and redirect hops.

Auth follows what Harbor hands us (HARBOR.md §1): its ``Authorization: Bearer <jwt>`` is tried first;
on a 401 the registry's challenge is followed (``WWW-Authenticate: Bearer realm=..,service=..,scope=..``),
asking the realm with Basic credentials when we have some (Open API ``username``/``password``, the
webhook robot account, or a Basic header the caller passed), anonymously otherwise. A ``Basic``
challenge is answered with the credentials directly.

The robot account is ours, not the caller's: it goes only to a registry in ``DF_HARBOR_REGISTRIES`` and
to a token realm on such a host or in ``DF_HARBOR_TOKEN_REALMS`` (see ``CredentialScope``); a webhook
naming any other registry, or a registry whose challenge names any other realm, fails before the
credential is sent.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode, urlsplit

import httpx
import orjson

from app.cdn.source import SourceError, request_headers, send_get
from app.preheat.model import MANIFEST_URL

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
LIST_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
ACCEPT = ", ".join((DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX, *SCHEMA1))

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_INDEX_DEPTH = 2  # an index may point at an index once; more is a malformed or hostile registry
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_TOKEN_MIN_LIFETIME = 60.0  # the token spec's default expires_in


class RegistryError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImageRef:
    scheme: str
    host: str  # may carry a path prefix, as the legacy regex allowed
    name: str
    reference: str

    def manifest_url(self, reference: str | None = None) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.name}/manifests/{reference or self.reference}"

    def blob_url(self, digest: str) -> str:
        """Exactly the URL dfdaemon hands dfget for a pull of this blob (PROTOCOL §14.1)."""
        return f"{self.scheme}://{self.host}/v2/{self.name}/blobs/{digest}"


@dataclass(frozen=True)
class Fetched:
    """A small registry answer, read completely."""

    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int  # from the manifest; -1 when it does not say (schema 1)
    url: str


def _host_port(authority: str) -> tuple[str, int | None]:
    """``Host:5000`` → ("host", 5000); ``[::1]:5000`` → ("::1", 5000); a bad port reads as no match."""
    try:
        parts = urlsplit(f"//{authority.strip()}")
        return (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return "", -1


@dataclass(frozen=True)
class CredentialScope:
    """Where configured credentials (the webhook robot account) may be sent.

    An entry without a port matches its host on any port; with one, that port only. A realm is also
    allowed on the host of any allowed registry: Harbor's realm is its own ``/service/token``."""

    registries: tuple[tuple[str, int | None], ...]
    realms: tuple[tuple[str, int | None], ...]

    @classmethod
    def parse(cls, registries: str, realms: str) -> CredentialScope:
        def entries(text: str) -> tuple[tuple[str, int | None], ...]:
            return tuple(_host_port(item) for item in text.split(",") if item.strip())
        return cls(entries(registries), entries(realms))

    @staticmethod
    def _matches(authority: tuple[str, int | None], entries: tuple[tuple[str, int | None], ...]) -> bool:
        host, port = authority
        return bool(host) and any(host == h and p in (None, port) for h, p in entries)

    def check_registry(self, ref: ImageRef) -> None:
        authority = _host_port(ref.host.partition("/")[0])
        if not self._matches(authority, self.registries):
            listed = "none is configured" if not self.registries else "it is not one of them"
            raise RegistryError(f"registry {ref.host} asks for credentials, but the robot account is only sent to "
                                f"the registries in DF_HARBOR_REGISTRIES ({listed}); nothing was sent")

    def check_realm(self, ref: ImageRef, realm: str) -> None:
        self.check_registry(ref)
        try:
            parts = urlsplit(realm)
            authority = ((parts.hostname or "").rstrip("."), parts.port)
        except ValueError:
            authority = ("", -1)
        same_host = any(authority[0] == host for host, _port in self.registries)
        if not (authority[0] and (same_host or self._matches(authority, self.realms))):
            raise RegistryError(f"registry {ref.host} names the token realm {realm}, which is neither on a "
                                "DF_HARBOR_REGISTRIES host nor in DF_HARBOR_TOKEN_REALMS; the robot account "
                                "was not sent")


def parse_image_url(url: str) -> ImageRef:
    match = MANIFEST_URL.match(url)
    if match is None:
        raise RegistryError(f"{url} is not an image manifest URL <scheme>://<registry>/v2/<name>/manifests/<reference>")
    scheme = match["scheme"].lower()
    if scheme not in ("http", "https"):
        raise RegistryError(f"unsupported scheme {scheme!r} in {url}")
    return ImageRef(scheme, match["host"], match["name"], match["reference"])


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service=".."`` → ("bearer", {"realm": .., "service": ..})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] or not m[3] else m[3] for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _without_auth(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class RegistryAuth:
    """The headers that get us into one repository, renewed from the token realm when they age."""

    def __init__(
        self, client: httpx.AsyncClient, ref: ImageRef, headers: dict[str, str], username: str = "", password: str = "",
        scope: CredentialScope | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.scope = scope  # set for configured credentials: checked before each time they would go out
        self.headers = dict(headers)
        passed = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        self.basic = _basic(username, password) if username else (passed if passed.lower().startswith("basic ") else "")
        self._challenge: dict[str, str] | None = None
        self._renew_at = float("inf")

    async def get(self, url: str, accept: str) -> Fetched:
        """GET with our headers; after a 401, authenticate as challenged and try once more."""
        response = await self._get(url, self.headers, accept)
        if response.status == 401:
            challenge = response.headers.get("www-authenticate", "")
            if await self._authenticate(challenge):
                response = await self._get(url, self.headers, accept)
        return response

    async def blob_headers(self) -> dict[str, str]:
        """Headers for a blob seed starting now: a fresh token if ours is about to expire."""
        if self._challenge is not None and time.monotonic() >= self._renew_at:
            await self._fetch_token(self._challenge)
        return dict(self.headers)

    async def _get(self, url: str, headers: dict[str, str], accept: str) -> Fetched:
        try:
            response = await send_get(self.client, url, request_headers(headers, {"Accept": accept}))
        except SourceError as exc:
            raise RegistryError(exc.message) from exc
        body = bytearray()
        try:
            # Read by hand to bound it: a manifest or token is small, anything big is not one.
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"{url} answered more than {MAX_MANIFEST_BYTES} bytes; not a manifest")
        except httpx.HTTPError as exc:
            raise RegistryError(f"reading {url} failed: {exc!r}") from exc
        finally:
            await response.aclose()
        return Fetched(response.status_code, response.headers, bytes(body))

    async def _authenticate(self, header: str) -> bool:
        scheme, params = parse_challenge(header)
        if scheme == "bearer" and params.get("realm"):
            self._challenge = params
            await self._fetch_token(params)
            return True
        if scheme == "basic" and self.basic:
            if self.scope is not None:
                self.scope.check_registry(self.ref)
            self.headers = {**_without_auth(self.headers), "Authorization": self.basic}
            return True
        return False

    async def _fetch_token(self, challenge: dict[str, str]) -> None:
        query = {"service": challenge.get("service", "")} if challenge.get("service") else {}
        query["scope"] = challenge.get("scope") or f"repository:{self.ref.name}:pull"
        realm = challenge["realm"]
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        if self.basic and self.scope is not None:
            self.scope.check_realm(self.ref, realm)
        token_headers = {"Authorization": self.basic} if self.basic else {}
        response = await self._get(url, token_headers, "application/json")
        if response.status != 200:
            answer = f"{_phrase(response.status)}: {response.text[:200].strip()}"
            raise RegistryError(f"token realm {realm} answered {answer}")
        try:
            answer = orjson.loads(response.content)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or _TOKEN_MIN_LIFETIME)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise RegistryError(f"token realm {realm} answered no usable JSON: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token realm {realm} answered without a token")
        self.headers = {**_without_auth(self.headers), "Authorization": f"Bearer {token}"}
        self._renew_at = time.monotonic() + max(lifetime, 10.0) / 2


async def image_blobs(auth: RegistryAuth, platform: str = "") -> list[Blob]:
    """Every blob a pull of the image fetches (config and layers), for one platform or all of them."""
    ref = auth.ref
    seen: dict[str, Blob] = {}
    await _collect(auth, ref.manifest_url(), platform, seen, depth=0)
    return list(seen.values())


async def _collect(auth: RegistryAuth, url: str, platform: str, seen: dict[str, Blob], depth: int) -> None:
    try:
        response = await auth.get(url, ACCEPT)
    except RegistryError as exc:
        raise RegistryError(f"manifest {url}: {exc.message}") from exc
    if response.status != 200:
        answer = f"registry answered {_phrase(response.status)}: {response.text[:200].strip()}"
        raise RegistryError(f"manifest {url}: {answer}")
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise RegistryError(f"manifest {url} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"manifest {url} is not a JSON object")
    media = str(doc.get("mediaType") or response.headers.get("content-type", "").split(";")[0].strip())
    ref = auth.ref
    if doc.get("schemaVersion") == 1:
        for layer in doc.get("fsLayers") or []:
            _add(seen, ref, layer.get("blobSum") if isinstance(layer, dict) else None, -1, url)
        return
    if media in LIST_TYPES or ("manifests" in doc and "layers" not in doc):
        if depth >= MAX_INDEX_DEPTH:
            raise RegistryError(f"manifest {url}: indexes nested too deep")
        children = [c for c in doc.get("manifests") or [] if isinstance(c, dict) and _wanted(c, platform)]
        if not children:
            raise RegistryError(f"manifest {url} has no image for platform {platform or 'any'}")
        for child in children:
            digest = _digest(child.get("digest"), url)
            await _collect(auth, ref.manifest_url(digest), platform, seen, depth + 1)
        return
    config = doc.get("config")
    if isinstance(config, dict) and config.get("digest"):
        _add(seen, ref, config.get("digest"), _size(config), url)
    for layer in doc.get("layers") or []:
        # Foreign (non-distributable) layers live at their own URLs, not in this registry.
        if isinstance(layer, dict) and not layer.get("urls"):
            _add(seen, ref, layer.get("digest"), _size(layer), url)


def _wanted(child: dict[str, object], platform: str) -> bool:
    found = child.get("platform")
    found = found if isinstance(found, dict) else {}
    # buildx attestation manifests ("unknown/unknown") are never pulled to run a container.
    if found.get("os") == "unknown":
        return False
    if not platform:
        return True
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    if found.get("os") != os_name or found.get("architecture") != arch:
        return False
    return not variant or found.get("variant") == variant


def _size(item: dict[str, object]) -> int:
    size = item.get("size")
    return size if isinstance(size, int) and size >= 0 else -1


def _digest(value: object, url: str) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise RegistryError(f"manifest {url} names an invalid digest {value!r}")
    return value


def _add(seen: dict[str, Blob], ref: ImageRef, digest: object, size: int, url: str) -> None:
    checked = _digest(digest, url)
    if checked not in seen:
        seen[checked] = Blob(checked, size, ref.blob_url(checked))
