"""Issue 7 findings 1, 2 and 8, against a real replica process: body, header and registration-field
bounds, and the idle and header-read timeouts of both ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from app.core.config import Settings
from app.protocol import wire
from tests.cluster import TEST_TOKEN, Cluster, Replica
from tests.http_raw import closed_by_server, connect, read_response

pytestmark = pytest.mark.slow

MB = 1 << 20


@pytest.fixture
def replica(tmp_path: Path, redis_url: str) -> Iterator[Replica]:
    (tmp_path / "cluster").mkdir()
    nodes = Cluster(tmp_path / "cluster", redis_url, None)
    try:
        yield nodes.start_replica()
    finally:
        nodes.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _registration(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "superNodeIp": "127.0.0.1", "rawUrl": "http://127.0.0.1:9/f.bin", "cid": "127.0.0.9-1-1.0",
        "ip": "127.0.0.9", "hostName": "h", "port": 15001, "path": "/peer/file/f.bin-1-1.0", "version": "1.0.6",
    }
    return base | fields


def _post_head(path: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TEST_TOKEN}\r\n{framing}\r\n\r\n"
    ).encode()


def _stream_body(replica: Replica, path: str, size: int, declared: bool) -> tuple[int | None, bytes]:
    """Send ``size`` bytes to ``path`` (declared, or chunked) until the server answers or drops us."""
    sock = connect(replica.host, replica.port, timeout=30)
    with sock:
        sock.sendall(_post_head(path, size if declared else None))
        chunk = b"x" * (64 << 10)
        framed = chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk)
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(framed)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: the server stopped reading
        response = read_response(sock)
    return (response.status, response.body) if response else (None, b"")


def test_oversized_bodies_are_refused_before_being_read(replica: Replica) -> None:
    limit = Settings().max_peer_body_bytes
    for path in ("/peer/registry", "/v1.0/peer/registry", "/task/metrics"):
        sock = connect(replica.host, replica.port)
        with sock:
            sock.sendall(_post_head(path, 200 * MB))  # only the head: the answer must not wait for a body
            response = read_response(sock)
            assert response is not None, path
            # dfget's route: HTTP 200 with code 501, which sends dfget to the next node.
            assert response.status == 200, path
            assert orjson.loads(response.body)["code"] == 501
            assert f"{limit}-byte limit" in orjson.loads(response.body)["msg"]
            assert response.headers["connection"] == "close"
            assert closed_by_server(sock)
    for path in ("/preheats", "/api/v1/preheats", "/oapi/v1/jobs", "/api/v1/webhooks/harbor"):
        sock = connect(replica.host, replica.port)
        with sock:
            sock.sendall(_post_head(path, 100 * MB))
            response = read_response(sock)
            assert response is not None and response.status == 413, path
    # Chunked, so nothing is declared: counted while read, refused at the first chunk over the limit.
    status, body = _stream_body(replica, "/peer/registry", 4 * MB, declared=False)
    assert status == 200 and orjson.loads(body)["code"] == 501
    status, _ = _stream_body(replica, "/preheats", 4 * MB, declared=False)
    assert status == 413
    # A registration just under the bound (a big rootCAs list) is read and answered on its merits.
    big = _registration(rootCAs=["A" * 1000] * 100)
    answer = httpx.post(f"http://{replica.node}/peer/registry", content=orjson.dumps(big), timeout=10).json()
    assert "limit" not in answer.get("msg", ""), answer


def test_twenty_concurrent_100mb_bodies_leave_rss_flat(replica: Replica) -> None:
    pid = replica.popen.pid
    before = _rss_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    # Both kinds of route, both framings: a declared length is refused at once, a chunked body as read.
    cases = [(("/peer/registry", "/preheats")[i % 2], i % 4 < 2) for i in range(20)]
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda case: _stream_body(replica, case[0], 100 * MB, case[1]), cases))
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started
    after = _rss_kib(pid)
    print(f"RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, after {after / 1024:.1f} MiB, "
          f"20 x 100 MB bodies in {elapsed:.1f}s")
    assert (peak - before) < 50 * 1024, (before, peak)
    answered = [status for status, _ in results if status is not None]
    assert answered and set(answered) <= {200, 413}, results
    assert httpx.get(f"http://{replica.node}/_ping", timeout=5).text == "OK"


def test_header_size_and_count_are_bounded_on_both_ports(replica: Replica) -> None:
    for port in (replica.port, replica.download_port):
        huge = b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MB + b"\r\n\r\n"
        many = b"GET /_ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n"
        for request in (huge, many):
            sock = connect(replica.host, port)
            with sock:
                try:
                    sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                response = read_response(sock)
                # Refused (431 or aiohttp's 400) or cut; never served.
                assert response is None or response.status in (400, 431), (port, response)
                assert response is None or b"aaaa" not in response.body
        # An ordinary request with a few dozen headers still works.
        headers = {f"X-Ok-{i}": "v" * 100 for i in range(50)}
        assert httpx.get(f"http://{replica.host}:{port}/_ping", headers=headers, timeout=5).text == "OK"


def test_registration_fields_are_capped() -> None:
    """The inputs that were found (4 MB cid, 4 MB path, 20,000 headers), through the parser itself:
    over the HTTP body bound they never reach it, so the caps are checked here and, below the body
    bound, through a live replica in the next test."""
    cases = {
        "cid": _registration(cid="c" * (4 * MB)),
        "path": _registration(path="/" + "p" * (4 * MB)),
        "20000 headers": _registration(headers=["a:b"] * 20000),
        "hostname": _registration(hostName="h" * 300),
        "rawurl": _registration(rawUrl="http://h/" + "u" * 20000),
        "header 'X-Long'": _registration(headers=["X-Long:" + "v" * 9000]),
        "a header name": _registration(headers=["N" * 300 + ":v"]),
    }
    for expected, body in cases.items():
        with pytest.raises(wire.WireError, match="over the limit") as caught:
            wire.parse_register(wire.lower_keys(body))
        assert expected in str(caught.value)
    for key, cap in wire.FIELD_CAPS.items():
        if key in ("ip", "port"):
            continue
        name = {"supernodeip": "superNodeIp", "rawurl": "rawUrl", "taskurl": "taskUrl", "hostname": "hostName",
                "callsystem": "callSystem"}.get(key, key)
        value = ("http://h/" + "u" * cap) if key.endswith("url") else "z" * (cap + 1)
        with pytest.raises(wire.WireError, match=f"{key} is .* over the limit"):
            wire.parse_register(wire.lower_keys(_registration(**{name: value})))
    # dfget's own registration passes.
    assert wire.parse_register(wire.lower_keys(_registration(headers=["Authorization: Bearer " + "t" * 4000])))


def test_live_registration_with_oversized_fields_gets_code_501(replica: Replica) -> None:
    url = f"http://{replica.node}/peer/registry"
    for body, expected in (
        (_registration(headers=["a:b"] * 20000), "20000 headers, over the limit of 100"),
        (_registration(cid="c" * 5000), "cid is 5000 characters long, over the limit of 256"),
        (_registration(path="/" + "p" * 8000), "path is 8001 characters long, over the limit of 4096"),
        (_registration(cid="c" * (4 * MB)), "byte limit"),  # over the body bound first
    ):
        answer = httpx.post(url, content=orjson.dumps(body), timeout=10).json()
        assert answer["code"] == 501 and expected in answer["msg"], answer


def test_idle_and_trickling_connections_are_closed_reuse_still_works(tmp_path: Path, redis_url: str) -> None:
    """Short bounds, so the test is quick: the idle bound just above dfget's 10 s reuse, the header
    bound 3 s. The found trickle (a byte every 2 s) must be cut at the header bound."""
    (tmp_path / "cluster").mkdir()
    nodes = Cluster(tmp_path / "cluster", redis_url, None,
                    extra_env={"DF_KEEPALIVE_TIMEOUT_SECONDS": "11", "DF_HEADER_TIMEOUT_SECONDS": "3"})
    try:
        replica = nodes.start_replica()

        def idle(port: int) -> float:
            sock = connect(replica.host, port, timeout=30)
            started = time.monotonic()
            with sock:
                assert closed_by_server(sock)
            return time.monotonic() - started

        def trickle(port: int) -> float:
            sock = connect(replica.host, port, timeout=30)
            started = time.monotonic()
            with sock:
                sock.settimeout(2.0)
                for byte in b"GET /_ping HTTP/1.1\r\nHost: x\r\n":
                    try:
                        sock.send(bytes([byte]))
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    if closed_by_server(sock):  # waits 2 s for the close, i.e. a byte every 2 s
                        break
                return time.monotonic() - started

        def reuse(port: int) -> bool:
            sock = connect(replica.host, port, timeout=30)
            with sock:
                request = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
                sock.sendall(request)
                first = read_response(sock)
                time.sleep(9.5)  # the point of the test: dfget reuses an idle connection for up to 10 s
                sock.sendall(request)
                second = read_response(sock)
            return first is not None and second is not None and second.status == 200

        ports = (replica.port, replica.download_port)
        with ThreadPoolExecutor(6) as pool:
            idles = [pool.submit(idle, port) for port in ports]
            trickles = [pool.submit(trickle, port) for port in ports]
            reuses = [pool.submit(reuse, port) for port in ports]
            for port, future in zip(ports, idles, strict=True):
                assert 10.5 <= future.result() <= 13.5, (port, future.result())
            for port, future in zip(ports, trickles, strict=True):
                assert 2.5 <= future.result() <= 5.5, (port, future.result())
            for port, future in zip(ports, reuses, strict=True):
                assert future.result(), port
    finally:
        nodes.stop()


def test_default_keepalive_outlasts_every_client_reuse() -> None:
    # dfget (fasthttp) reuses idle connections for 10 s, haproxy's pool for up to 30 s.
    defaults = Settings()
    assert defaults.keepalive_timeout_seconds > 30
    assert defaults.header_timeout_seconds < defaults.keepalive_timeout_seconds
