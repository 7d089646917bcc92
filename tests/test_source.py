"""Origin access: header conversion, the registration probe, expiry checks (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from app.cdn.source import (
    SourceError,
    _verifying_tls,
    convert_headers,
    format_http_date,
    is_fresh,
    make_source_client,
    open_source,
    parse_content_range,
    parse_http_date_ms,
    probe_source,
)
from tests.sources import SourceProcess, SourceServer, closed_port


@pytest.fixture
async def src() -> AsyncIterator[SourceServer]:
    async with SourceServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_source_client() as source_client:
        yield source_client


def test_convert_headers_like_go() -> None:
    entries = ["Authorization: Bearer a:b", "X-Empty:", "no colon", " Accept : a", "Accept: b", ":v", "k:  v  "]
    assert convert_headers(entries) == {"Authorization": "Bearer a:b", "Accept": "a,b", "k": "v"}
    assert convert_headers(None) == {}


def test_http_dates() -> None:
    assert parse_http_date_ms("Sat, 28 Nov 2026 04:48:13 GMT") == 1795841293000
    assert format_http_date(1795841293000) == "Sat, 28 Nov 2026 04:48:13 GMT"
    assert parse_http_date_ms("garbage") == 0
    assert parse_http_date_ms(None) == 0


async def test_probe_reads_length_and_sends_task_headers(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("f.bin", os.urandom(10 * 1024 * 1024))
    result = await probe_source(client, src.url("f.bin"), {"X-Trace": "1"}, 4.0)
    assert (result.length, result.status, result.reason) == (10 * 1024 * 1024, 200, "")
    seen = src.stats("f.bin").headers[0]
    assert seen["X-Trace"] == "1"
    assert seen["Accept-Encoding"] == "identity"
    assert seen["User-Agent"] == "Go-http-client/1.1"
    await asyncio.sleep(0.2)
    # The probe hung up after the headers: the body was never sent in full.
    assert src.stats("f.bin").full_gets == 0
    assert src.stats("f.bin").aborted == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "not_found"),
        (410, "not_found"),
        (401, "auth"),
        (403, "auth"),
        (407, "auth"),
        (500, "server"),
        (503, "server"),
        (400, "server"),
    ],
)
async def test_probe_classifies_statuses(
    src: SourceServer, client: httpx.AsyncClient, status: int, reason: str
) -> None:
    src.add("f", b"data", status=status)
    result = await probe_source(client, src.url("f"), {}, 4.0)
    assert (result.length, result.status, result.reason) == (-1, status, reason)
    assert str(status) in result.error


async def test_probe_missing_authorization(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("secret", b"x" * 10, auth="Bearer ok")
    denied = await probe_source(client, src.url("secret"), {}, 4.0)
    assert (denied.status, denied.reason) == (401, "auth")
    allowed = await probe_source(client, src.url("secret"), {"Authorization": "Bearer ok"}, 4.0)
    assert (allowed.length, allowed.reason) == (10, "")


async def test_probe_unreachable(client: httpx.AsyncClient) -> None:
    result = await probe_source(client, f"http://127.0.0.1:{closed_port()}/f", {}, 4.0)
    assert (result.length, result.status, result.reason) == (-1, 0, "unreachable")
    bad_name = await probe_source(client, "http://no-such-host.invalid/f", {}, 4.0)
    assert bad_name.reason == "unreachable"
    for broken in ("http://bad host/f", "ftp://127.0.0.1/f", "not a url"):
        assert (await probe_source(client, broken, {}, 4.0)).reason == "unreachable"


async def test_probe_timeout_is_unreachable(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("slow", b"x", delay=2.0)
    result = await probe_source(client, src.url("slow"), {}, 0.3)
    assert result.reason == "unreachable"


async def test_probe_without_content_length(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("chunked", b"x" * 1000, chunked=True)
    result = await probe_source(client, src.url("chunked"), {}, 4.0)
    assert (result.length, result.status, result.reason) == (-1, 200, "")


async def test_probe_encoded_body_has_unknown_length(src: SourceServer, client: httpx.AsyncClient) -> None:
    # The origin ignores "identity"; like Go after decoding gzip, the length is unknown.
    src.add("gz", gzip.compress(b"a" * 5000), content_encoding="gzip")
    assert (await probe_source(client, src.url("gz"), {}, 4.0)).length == -1


async def test_probe_follows_redirects_keeping_credentials_on_same_host(
    src: SourceServer, client: httpx.AsyncClient
) -> None:
    src.add("target", b"y" * 123, auth="Bearer ok")
    src.add("hop2", b"", redirect="/target")
    src.add("hop1", b"", redirect=src.url("hop2"))
    result = await probe_source(client, src.url("hop1"), {"Authorization": "Bearer ok"}, 4.0)
    assert (result.length, result.status, result.reason) == (123, 200, "")
    assert src.stats("target").headers[0]["Authorization"] == "Bearer ok"


async def test_redirect_to_other_host_drops_credentials(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("target", b"y" * 5, auth="Bearer ok")
    # Same server, other host name: Go (and we) drop Authorization and Cookie.
    src.add("away", b"", redirect=f"http://localhost:{src.port}/target")
    headers = {"Authorization": "Bearer ok", "Cookie": "a=b", "X-Keep": "1"}
    result = await probe_source(client, src.url("away"), headers, 4.0)
    assert (result.status, result.reason) == (401, "auth")
    seen = src.stats("target").headers[0]
    assert "Authorization" not in seen and "Cookie" not in seen
    assert seen["X-Keep"] == "1"


async def test_redirect_loop_stops_after_ten(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("loop", b"", redirect="/loop")
    result = await probe_source(client, src.url("loop"), {}, 4.0)
    assert (result.status, result.reason) == (302, "server")
    assert src.stats("loop").requests == 11  # the first request and ten redirects, as Go


async def test_is_fresh(src: SourceServer, client: httpx.AsyncClient) -> None:
    blob = src.add("f", b"content")
    async with open_source(client, src.url("f"), {}) as response:
        etag, modified = response.etag, response.last_modified_ms
        assert b"".join([chunk async for chunk in response.chunks()]) == b"content"
    assert etag and modified > 0
    url = src.url("f")
    assert await is_fresh(client, url, {}, last_modified_ms=modified, etag=etag)
    assert await is_fresh(client, url, {}, last_modified_ms=modified, etag="")
    assert await is_fresh(client, url, {}, last_modified_ms=0, etag=etag)
    assert not await is_fresh(client, url, {}, last_modified_ms=0, etag="")  # nothing to compare
    assert src.stats("f").not_modified == 3
    blob.data, blob.mtime = b"changed", blob.mtime + 10
    assert not await is_fresh(client, url, {}, last_modified_ms=modified, etag=etag)
    assert not await is_fresh(client, url, {}, last_modified_ms=modified, etag="")
    # A network error counts as "not expired", like Go.
    down = f"http://127.0.0.1:{closed_port()}/f"
    assert await is_fresh(client, down, {}, last_modified_ms=modified, etag=etag)
    await asyncio.sleep(0.2)
    assert src.stats("f").full_gets == 1  # only open_source read a body; 200s to is_fresh hung up
    assert src.stats("f").aborted == 2


async def test_open_source_errors_and_range(src: SourceServer, client: httpx.AsyncClient) -> None:
    src.add("f", bytes(range(256)))
    with pytest.raises(SourceError) as missing:
        async with open_source(client, src.url("nope"), {}):
            pass
    assert missing.value.reason == "not_found" and missing.value.status == 404
    async with open_source(client, src.url("f"), {}, range_start=250) as response:
        assert response.status == 206
        assert b"".join([chunk async for chunk in response.chunks()]) == bytes(range(250, 256))
    assert src.stats("f").headers[-1]["Range"] == "bytes=250-"


async def test_if_range_resume_and_exact_byte_count(src: SourceServer, client: httpx.AsyncClient) -> None:
    data = os.urandom(3 * 256 * 1024 + 77)
    blob = src.add("f", data)
    etag = blob.etag(data)
    async with open_source(client, src.url("f"), {}, range_start=1000, if_range=etag) as response:
        assert (response.status, response.content_range, response.length) == (206, (1000, len(data) - 1, len(data)),
                                                                              len(data) - 1000)
        assert response.accept_ranges == "bytes"
        assert b"".join([chunk async for chunk in response.chunks()]) == data[1000:]
    sent = src.stats("f").headers[-1]
    assert (sent["Range"], sent["If-Range"]) == ("bytes=1000-", etag)
    # Same bytes, a new ETag: If-Range no longer matches and the whole file comes back as a 200.
    blob.etag_suffix = "-2"
    assert blob.etag(data) != etag
    async with open_source(client, src.url("f"), {}, range_start=1000, if_range=etag) as response:
        assert (response.status, response.content_range, response.length) == (200, None, len(data))
        assert b"".join([chunk async for chunk in response.chunks()]) == data
    stats = src.stats("f")
    assert (stats.range_gets, stats.full_gets, stats.bytes_sent) == (1, 1, 2 * len(data) - 1000)


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 0-9/10") == (0, 9, 10)
    assert parse_content_range(" bytes 5-9/10 ") == (5, 9, 10)
    bad_values = (
        None, "", "bytes 0-9/*", "bytes */10", "bytes 9-0/10", "bytes 0-10/10", "items 0-9/10", "bytes -1-9/10"
    )
    for bad in bad_values:
        assert parse_content_range(bad) is None, bad


def test_source_server_as_subprocess(tmp_path: Path) -> None:
    on_disk = tmp_path / "f.bin"
    on_disk.write_bytes(b"a" * 1000)
    with SourceProcess({"f.bin": on_disk, "g.bin": b"b" * 10}) as origin:
        assert httpx.get(origin.url("f.bin")).content == b"a" * 1000
        assert httpx.get(origin.url("g.bin")).content == b"b" * 10
        assert origin.stats("f.bin")["full_gets"] == 1
        origin.configure("g.bin", status=500)
        assert httpx.get(origin.url("g.bin")).status_code == 500
        origin.put("h.bin", b"c" * 5, chunked=True)
        response = httpx.get(origin.url("h.bin"))
        assert response.content == b"c" * 5 and "content-length" not in response.headers
        assert origin.stats()["/g.bin"]["requests"] == 2
        origin.put("f.bin", b"changed", as_then=1)  # served from the next GET on
        assert httpx.get(origin.url("f.bin")).content == b"changed"
        origin.reset()
        assert origin.stats("g.bin")["requests"] == 0


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI signs the test certificate")
    key, cert = tmp_path / "origin.key", tmp_path / "origin.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


async def test_source_clients_share_one_verifying_tls_context(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every source client uses one TLS context per process (built once: ~45 ms of CPU each otherwise). It
    still verifies: a self-signed origin is refused, and trusted once SSL_CERT_FILE names its certificate
    (read from the environment, as httpx does, when the context is built)."""
    key, cert = self_signed
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(body=b"hello")

    origin = web.Application()
    origin.router.add_get("/f", hello)
    runner = web.AppRunner(origin)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://127.0.0.1:{port}/f"
    try:
        async with make_source_client() as first, make_source_client() as second:
            for client in (first, second):
                assert (await probe_source(client, url, {}, 4.0)).reason == "unreachable"
        assert _verifying_tls.cache_info().currsize == 1
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        _verifying_tls.cache_clear()
        async with make_source_client() as trusting:
            assert (await probe_source(trusting, url, {}, 4.0)).length == 5
    finally:
        _verifying_tls.cache_clear()  # the next test builds the default one again
        await runner.cleanup()
