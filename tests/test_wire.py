"""Parsing dfget's requests (PROTOCOL §2.3, §5.1, §5.2) without I/O."""

from __future__ import annotations

import orjson
import pytest

from app.cdn.source import convert_headers
from app.protocol import wire
from tests.samples import load


def test_the_captured_registration_parses() -> None:
    captured = load("01_supernode_register_POST_peer_registry.txt")[0]
    request = wire.parse_register(wire.decode_body(captured.request_body, captured.request_headers["content-type"]))
    assert request.raw_url == request.task_url == "http://127.0.0.1:18080/file20m.bin"
    assert request.cid == "127.0.0.7-10729-1795841294.477"
    assert (request.ip, request.port, request.host_name, request.version) == ("127.0.0.7", 51137, "vm", "0.4.1")
    assert request.path == "/peer/file/clean-peer7.bin-10729-1795841294.477"


def test_the_captured_dfdaemon_registration_parses_with_headers() -> None:
    body = (b'{"superNodeIp":"127.0.0.6","rawUrl":"http://127.0.0.1:18081/v2/library/demo/blobs/sha256:7e",'
            b'"taskUrl":"http://127.0.0.1:18081/v2/library/demo/blobs/sha256:7e","cid":"127.0.0.6-11976-1.181",'
            b'"ip":"127.0.0.6","hostName":"vm","port":51137,"path":"/peer/file/x","version":"0.4.1",'
            b'"callSystem":"com_ops_dragonfly","headers":["User-Agent:curl/7.88.1","Accept:*/*",'
            b'"X-Forwarded-For:127.0.0.1"],"dfdaemon":true}')
    request = wire.parse_register(wire.decode_body(body, "application/json;charset=utf-8"))
    assert request.dfdaemon and request.call_system == "com_ops_dragonfly"
    assert convert_headers(request.header_entries) == {
        "User-Agent": "curl/7.88.1", "Accept": "*/*", "X-Forwarded-For": "127.0.0.1"}


def test_keys_match_case_insensitively_like_go() -> None:
    body = orjson.dumps({"rawURL": "http://registry:5000/v2/a/blobs/sha256:1", "taskURL": "", "cID": "c",
                         "IP": "10.0.0.1", "HOSTNAME": "h", "Port": 0, "PATH": "/peer/file/p", "MD5": "ab"})
    request = wire.parse_register(wire.decode_body(body, ""))
    assert request.raw_url.startswith("http://registry:5000/")  # a dotless host is fine (§15.14)
    assert (request.cid, request.ip, request.port, request.md5) == ("c", "10.0.0.1", 0, "ab")


def test_a_form_body_is_accepted_like_1_0_x() -> None:
    body = (b"rawUrl=http%3A%2F%2Fa.b%2Fx&cid=c&ip=10.0.0.1&port=15001&path=%2Fpeer%2Ffile%2Fp"
            b"&headers=A%3A1&headers=B%3A2")
    request = wire.parse_register(wire.decode_body(body, "application/x-www-form-urlencoded"))
    assert request.raw_url == "http://a.b/x" and request.port == 15001
    assert request.header_entries == ("A:1", "B:2")


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"ip": ""}, "IPv4"), ({"ip": "::1"}, "IPv4"), ({"port": 80}, "15000..65000"), ({"port": "x"}, "integer"),
     ({"rawUrl": "ftp://a.b/x"}, "http"), ({"rawUrl": "nonsense"}, "http"), ({"cid": ""}, "cid"),
     ({"path": ""}, "path"), ({"headers": 5}, "headers")],
)
def test_invalid_registrations_are_explained(changes: dict[str, object], message: str) -> None:
    body = {"rawUrl": "http://a.b/x", "cid": "c", "ip": "10.0.0.1", "port": 15001, "path": "/peer/file/p"} | changes
    with pytest.raises(wire.WireError, match=message):
        wire.parse_register(wire.decode_body(orjson.dumps(body), ""))


def test_headers_convert_like_go() -> None:
    assert convert_headers(["A: 1", "A:2", "no colon", "Empty:", " B :  x:y "]) == {"A": "1,2", "B": "x:y"}


def test_pull_parsing_and_fingerprint() -> None:
    query = {"srcCid": "s", "dstCid": "cdnnode:1.2.3.4~t", "range": "0-4194303", "result": "503", "status": "701",
             "taskId": "t"}
    request = wire.parse_pull(query)
    assert (request.status, request.result) == (701, 503)
    assert request.fingerprint == "701|503|0-4194303|cdnnode:1.2.3.4~t"
    with pytest.raises(wire.WireError):
        wire.parse_pull({"srcCid": "s", "taskId": "t", "status": "x"})
    with pytest.raises(wire.WireError):
        wire.parse_pull({"status": "700"})
