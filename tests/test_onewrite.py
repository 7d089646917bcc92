"""One send per response (app.api.onewrite): a response head waits for its body, never past one
turn of the loop. Real sockets on loopback: the transport under test wraps a real asyncio transport,
counted by a thin proxy; the server tests run uvicorn with the replica's own protocol class."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from app.api.limits import guarded_protocol
from app.api.onewrite import HeadHoldingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class _Counted:
    """A real transport whose writes are counted."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer  # kept: a collected StreamWriter closes its transport
        self.transport = writer.transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[_Counted, asyncio.StreamReader, asyncio.AbstractServer]:
    """A real loopback connection: our end's transport (counted) and the peer's reader."""
    accepted: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    return _Counted(writer), await accepted, server


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), 5)


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    counted, peer, server = await _pair()
    wrapped = HeadHoldingTransport(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    assert counted.writes == []  # held
    wrapped.write(b"hello")
    assert counted.writes == [HEAD + b"hello"]
    assert await _read_exactly(peer, len(HEAD) + 5) == HEAD + b"hello"
    # Anything that is not a response head is written at once.
    wrapped.write(b"more bytes\r\n\r\n")
    assert counted.writes[-1] == b"more bytes\r\n\r\n"
    wrapped.close()
    server.close()


async def test_a_head_alone_goes_out_within_the_same_turn_of_the_loop() -> None:
    counted, peer, server = await _pair()
    wrapped = HeadHoldingTransport(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    await asyncio.sleep(0)  # one turn: the flush scheduled with call_soon has run
    assert counted.writes == [HEAD]
    assert await _read_exactly(peer, len(HEAD)) == HEAD
    wrapped.write(b"hello")  # the body, later: written as it comes, nothing held twice
    assert counted.writes == [HEAD, b"hello"]
    assert await _read_exactly(peer, 5) == b"hello"
    wrapped.close()
    server.close()


async def test_close_sends_a_held_head_before_the_connection_ends_and_abort_drops_it() -> None:
    counted, peer, server = await _pair()
    wrapped = HeadHoldingTransport(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    refusal = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    wrapped.write(refusal)
    wrapped.close()
    assert await asyncio.wait_for(peer.read(), 5) == refusal  # then EOF
    await asyncio.sleep(0)
    assert counted.writes == [refusal]  # the cancelled flush did not write it again

    counted, peer, server2 = await _pair()
    wrapped = HeadHoldingTransport(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    wrapped.abort()
    await asyncio.sleep(0)
    assert counted.writes == []
    assert await asyncio.wait_for(peer.read(), 5) == b""
    server.close()
    server2.close()


# --- through uvicorn, with the replica's protocol ----------------------------------------------------------


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":  # a streamed response: its head must not wait for the body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"transfer-encoding", b"chunked")]})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        return
    body = scope["path"].encode()
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, loop="uvloop", log_level="warning",
                            http=guarded_protocol(16384, 100, 10.0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def _data_segments_in(sock: socket.socket) -> int:
    """Linux's tcpi_data_segs_in (struct tcp_info, offset 152; kernel 4.6+): segments received with data."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 152)[0])


def test_each_response_arrives_whole_in_one_segment_on_a_kept_alive_connection(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port), timeout=5) as sock:
        for path in ("/a", "/peer/task", "/bb"):
            before = _data_segments_in(sock)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = _recv_until(sock, b"\r\n\r\n")
            head, _, body = data.partition(b"\r\n\r\n")
            while len(body) < len(path):
                body += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK") and body == path.encode()
            # uvicorn writes head and body in two calls; they left in one send (two segments before).
            assert _data_segments_in(sock) - before == 1, path


def test_a_streamed_response_shows_its_head_before_its_body_is_ready(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _recv_until(sock, b"\r\n\r\n")
        head_after = time.monotonic() - started
        rest = _recv_until(sock, b"0\r\n\r\n")
        body_after = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 OK") and b"late" in head + rest
    # The head came at once, the body a second later: not held until the body.
    assert head_after < 0.5 <= body_after, (head_after, body_after)
