"""Task ids, piece geometry and framing against the values captured from the Go supernode."""

from __future__ import annotations

import hashlib

import pytest

from app.protocol import pieces
from app.protocol.taskid import TASK_ID_KEY, cdn_path, filter_url_params, task_id


def test_task_id_reproduces_the_captured_id() -> None:
    assert task_id("http://127.0.0.1:18080/file20m.bin") == (
        "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
    )


def test_task_id_of_the_captured_dfdaemon_blob_ignores_headers() -> None:
    url = "http://127.0.0.1:18081/v2/library/demo/blobs/sha256:7eacbb74427f06ba8dedc0e68408ca9914c7567b67d49a9323317d948770ec55"
    expected = "668301fc1b07fd714d12c9e4f48cd47b965a8b152342564cf52152aec805e6ef"
    assert task_id(url) == expected
    assert task_id(url, headers={"User-Agent": "curl/7.88.1", "Accept": "*/*"}) == expected


def test_task_id_key_bytes() -> None:
    assert TASK_ID_KEY.hex() == "3e492470672d7e41537e7350277271755f604f68266c7a23395d223d3b6e4525"


def test_task_id_sign_and_range() -> None:
    url = "http://a.b/x"
    def raw(*parts: str) -> str:
        return hashlib.sha256(TASK_ID_KEY + "".join(parts).encode() + TASK_ID_KEY).hexdigest()

    assert task_id(url, md5="m", identifier="i") == raw(url, "m")
    assert task_id(url, identifier="i") == raw(url, "i")
    assert task_id(url, headers={"Range": "bytes=0-9"}) == raw(url, "bytes=0-9")
    # The lookup is case-sensitive, as in dfget 1.0.1+.
    assert task_id(url, headers={"range": "bytes=0-9"}) == raw(url)


def test_filter_url_params() -> None:
    url = "http://a.b/x?k1=v1&Signature=abc&k3=v3"
    assert filter_url_params(url, ["Signature", "Expires"]) == "http://a.b/x?k1=v1&k3=v3"
    assert filter_url_params("http://a.b/x?Signature=1", ["Signature"]) == "http://a.b/x"
    assert filter_url_params("http://a.b/x", ["Signature"]) == "http://a.b/x"
    assert filter_url_params(url, []) == url


def test_cdn_path() -> None:
    tid = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
    assert cdn_path(tid) == f"/download/722/{tid}"


@pytest.mark.parametrize(
    ("length", "size"),
    [(-1, 4194304), (0, 4194304), (20971520, 4194304), (200 * pieces.MIB, 4194304),
     (300 * pieces.MIB, 5 * pieces.MIB), (1024 * pieces.MIB, 12 * pieces.MIB), (1300 * pieces.MIB, 15 * pieces.MIB),
     (50 * 1024 * pieces.MIB, 15 * pieces.MIB)],
)
def test_piece_size(length: int, size: int) -> None:
    assert pieces.piece_size_for(length) == size


def test_geometry_of_the_captured_files() -> None:
    assert pieces.piece_count(20971520, 4194304) == 6
    assert pieces.framed_length(20971520, 4194304) == 20971550
    assert pieces.framed_length(50 * pieces.MIB, 4194304) == 52428865
    assert pieces.framed_length(12582912, 4194304) == 12582932
    assert pieces.piece_count(0, 4194304) == 1
    assert pieces.framed_length(0, 4194304) == 5
    assert pieces.provisional_piece_total(20971520, 4194304) == 5


def test_ranges() -> None:
    assert pieces.piece_range(5, 4194304) == "20971520-25165823"
    assert pieces.piece_num_of_range("20971520-25165823") == 5
    assert pieces.piece_num_of_range("4194304-8388607") == 1
    assert pieces.piece_num_of_range("") == -1
    assert pieces.piece_num_of_range("9-3") == -1
    assert pieces.piece_num_of_range("a-b") == -1


def test_frame_headers_match_the_capture() -> None:
    assert pieces.frame_header(4194299, 4194304).hex() == "043ffffb"
    assert pieces.frame_header(25, 4194304).hex() == "04000019"
    assert pieces.frame_header(15, 4194304).hex() == "0400000f"
    empty = pieces.frame_piece(b"", 4194304)
    assert empty == bytes.fromhex("04000000") + b"\x7f"
    body = pieces.frame_piece(b"abc", 4194304)
    assert pieces.unframe_piece(body) == b"abc"
    assert pieces.header_data_len(body) == 3
    assert pieces.piece_md5(body) == f"{hashlib.md5(body).hexdigest()}:8"
