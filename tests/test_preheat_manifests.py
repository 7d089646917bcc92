"""Manifest handling of the registry client against a plain HTTP origin serving manifest documents:
schema 1, Docker manifest lists with variants, foreign layers, bad digests; and the small parsers."""

from __future__ import annotations

import orjson
import pytest

from app.cdn.source import make_source_client
from app.preheat.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    RegistryAuth,
    RegistryError,
    image_blobs,
    parse_challenge,
    parse_image_url,
)
from tests.sources import SourceServer


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image(*layers: int, config: int = 0, foreign: int = 0) -> bytes:
    entries: list[dict[str, object]] = [{"mediaType": "x", "size": 100 + n, "digest": digest(n)} for n in layers]
    if foreign:
        entries.append({"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 1,
                        "digest": digest(foreign), "urls": ["https://example.com/l"]})
    return orjson.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": digest(config)},
        "layers": entries,
    })


async def blobs_of(server: SourceServer, reference: str, platform: str = "") -> dict[str, int]:
    ref = parse_image_url(f"{server.base_url}/v2/lib/app/manifests/{reference}")
    async with make_source_client() as client:
        found = await image_blobs(RegistryAuth(client, ref, {}), platform)
    assert all(b.url == f"{server.base_url}/v2/lib/app/blobs/{b.digest}" for b in found)
    return {b.digest: b.size for b in found}


async def test_manifest_kinds_and_platforms() -> None:
    async with SourceServer() as server:
        server.add("v2/lib/app/manifests/old", orjson.dumps(
            {"schemaVersion": 1, "fsLayers": [{"blobSum": digest(1)}, {"blobSum": digest(2)}, {"blobSum": digest(1)}]}))
        server.add(f"v2/lib/app/manifests/{digest(100)}", image(11, 12, config=10, foreign=13))
        server.add(f"v2/lib/app/manifests/{digest(200)}", image(21, config=20))
        server.add(f"v2/lib/app/manifests/{digest(300)}", image(31, config=30))
        children = [(100, {"os": "linux", "architecture": "amd64"}),
                    (200, {"os": "linux", "architecture": "arm", "variant": "v7"}),
                    (300, {"os": "linux", "architecture": "arm", "variant": "v6"})]
        entries = [{"mediaType": DOCKER_MANIFEST, "size": 1, "digest": digest(n), "platform": p} for n, p in children]
        server.add("v2/lib/app/manifests/multi",
                   orjson.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}))
        server.add("v2/lib/app/manifests/evil", image(1, config=2).replace(digest(1).encode(), b"sha256:../../x"))
        schema1 = await blobs_of(server, "old")
        everything = await blobs_of(server, "multi")
        v7 = await blobs_of(server, "multi", "linux/arm/v7")
        arm = await blobs_of(server, "multi", "linux/arm")
        with pytest.raises(RegistryError, match="no image for platform windows/amd64"):
            await blobs_of(server, "multi", "windows/amd64")
        with pytest.raises(RegistryError, match="invalid digest"):
            await blobs_of(server, "evil")
        with pytest.raises(RegistryError, match="404"):
            await blobs_of(server, "missing")
    assert schema1 == {digest(1): -1, digest(2): -1}
    assert set(everything) == {digest(n) for n in (10, 11, 12, 20, 21, 30, 31)}  # the foreign layer is not ours
    assert everything[digest(11)] == 111 and everything[digest(10)] == 7
    assert set(v7) == {digest(20), digest(21)} and set(arm) == {digest(n) for n in (20, 21, 30, 31)}


def test_parsers() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:library/busybox:pull",error="invalid_token"')
    assert scheme == "bearer" and params == {"realm": "https://auth.example.com/token",
                                             "service": "registry.example.com",
                                             "scope": "repository:library/busybox:pull", "error": "invalid_token"}
    assert parse_challenge("Basic realm=registry") == ("basic", {"realm": "registry"})
    ref = parse_image_url("https://harbor.example.com/v2/library/nested/app/manifests/sha256:" + "a" * 64)
    assert (ref.host, ref.name, ref.reference) == ("harbor.example.com", "library/nested/app", "sha256:" + "a" * 64)
    assert parse_image_url("http://h:5000/prefix/v2/a/manifests/1").host == "h:5000/prefix"
    for bad in ("https://h/v2/a/blobs/x", "ftp://h/v2/a/manifests/1", "h/v2/a/manifests/1"):
        with pytest.raises(RegistryError):
            parse_image_url(bad)
