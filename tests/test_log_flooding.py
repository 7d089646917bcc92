"""Issue 7 finding 9: a client cannot flood the log. Disconnects mid-body log one line without a
traceback, malformed requests are neither logged with a traceback nor echoed, repeats are rate-limited."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.lograte import RepeatFilter
from tests.cluster import TEST_TOKEN, Cluster, Replica
from tests.http_raw import closed_by_server, connect, read_response

pytestmark = pytest.mark.slow


@pytest.fixture
def replica(tmp_path: Path, redis_url: str) -> Iterator[Replica]:
    (tmp_path / "cluster").mkdir()
    nodes = Cluster(tmp_path / "cluster", redis_url, None, extra_env={"DF_HARBOR_WEBHOOK_SECRET": "hook"})
    try:
        yield nodes.start_replica()
    finally:
        nodes.stop()


def _log_after_startup(replica: Replica) -> list[str]:
    lines = replica.log.read_text(errors="replace").splitlines()
    start = max(i for i, line in enumerate(lines) if "Uvicorn running" in line or "supernode up" in line)
    return lines[start + 1:]


def _wait_for(replica: Replica, needle: str, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _log_after_startup(replica)
        if sum(needle in line for line in lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_repeated_warnings_keep_the_first_then_a_count() -> None:
    now = [0.0]
    repeat = RepeatFilter(interval=60, clock=lambda: now[0])

    def record(msg: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
        return logging.LogRecord("app.api", level, __file__, 1, msg, args, None)

    assert repeat.filter(record("redis unavailable on %s", logging.WARNING, "/peer/task"))
    for i in range(500):
        now[0] = i * 0.1
        assert not repeat.filter(record("redis unavailable on %s", logging.WARNING, f"/peer/{i}"))
    assert repeat.filter(record("another warning"))  # another kind is not held back
    assert repeat.filter(record("routine", logging.INFO)) and repeat.filter(record("routine", logging.INFO))
    now[0] = 61.0
    again = record("redis unavailable on %s", logging.WARNING, "/peer/task")
    assert repeat.filter(again)
    assert "[500 more like this in the last 61s]" in again.getMessage()
    assert again.getMessage().startswith("redis unavailable on /peer/task")


def test_client_gone_mid_body_logs_one_line_without_traceback(replica: Replica) -> None:
    routes = ("/peer/registry", "/task/metrics", "/preheats", "/api/v1/webhooks/harbor", "/oapi/v1/jobs")
    for path in routes:
        for _ in range(3):
            sock = connect(replica.host, replica.port)
            auth = "hook" if "webhooks" in path else f"Bearer {TEST_TOKEN}"  # authorised: the body is read
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\n"
                    "Content-Length: 10000\r\n\r\n")
            sock.sendall(head.encode() + b'{"url": "http://')
            time.sleep(0.05)  # the body has begun to arrive: the handler is reading it when we go
            sock.close()
    lines = _wait_for(replica, "client went away", 3 * len(routes))
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line], "\n".join(lines)
    for path in routes:
        gone = [line for line in lines if "client went away" in line and path in line]
        assert len(gone) == 3, (path, lines)  # one line per request, not two


def test_malformed_requests_are_not_echoed_nor_traced_and_repeats_are_rate_limited(replica: Replica) -> None:
    marker = b"SECRET-REQUEST-BYTES"
    malformed = [
        b"\x16\x03\x01\x02\x00" + marker + b"\r\n\r\n",  # a TLS hello on a plain port
        b"GET /download/x HTTP/1.1\r\nHost: x\r\n" + marker + b"\r\n\r\n",  # a header line without a colon
        b"GET /download/x HTTP/1.1\r\nHost: x\r\nX: " + marker * 1000 + b"\r\n\r\n",  # a line too long
        b"G\x00T /" + marker + b" HTTP/1.1\r\n\r\n",
    ]
    for port in (replica.download_port, replica.port):
        for _ in range(25):
            for request in malformed:
                sock = connect(replica.host, port)
                with sock:
                    sock.sendall(request)
                    response = read_response(sock)
                    assert response is not None and 400 <= response.status < 500, (port, request[:40], response)
                    assert marker not in response.body and b"\\x16" not in response.body, response.body
                    assert closed_by_server(sock)
    lines = _wait_for(replica, "invalid HTTP request received", 1)
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line], "\n".join(lines[:40])
    assert not [line for line in lines if "SECRET-REQUEST" in line]
    piece = [line for line in lines if "malformed piece request" in line]
    api = [line for line in lines if "invalid HTTP request received" in line or "header bounds" in line]
    # 100 bad requests per port inside a minute: the first of each kind is logged, the rest counted.
    assert 1 <= len(piece) <= 2 and 1 <= len(api) <= 2, "\n".join(lines)
