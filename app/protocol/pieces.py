"""Piece geometry and framing (PROTOCOL §7.6–7.8, §9.1–9.3). Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import struct

MIB = 1024 * 1024
DEFAULT_PIECE_SIZE = 4 * MIB
MAX_PIECE_SIZE = 15 * MIB
FRAME_OVERHEAD = 5  # 4-byte header + 1-byte trailer
TRAILER = b"\x7f"
_HEADER = struct.Struct(">I")


def piece_size_for(http_file_length: int) -> int:
    """Framed piece size for a raw source length; unknown (<=0) and small files get 4 MiB."""
    if http_file_length <= 200 * MIB:
        return DEFAULT_PIECE_SIZE
    hundreds = http_file_length // (100 * MIB)
    return min((hundreds - 2) * MIB + DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE)


def payload_size(piece_size: int) -> int:
    return piece_size - FRAME_OVERHEAD


def piece_count(raw_length: int, piece_size: int) -> int:
    """Number of framed pieces; an empty file still has one (empty) piece."""
    if raw_length <= 0:
        return 1
    per_piece = payload_size(piece_size)
    return -(-raw_length // per_piece)


def provisional_piece_total(http_file_length: int, piece_size: int) -> int:
    """pieceTotal the Go supernode announces before seeding; may be one short (§7.7)."""
    if http_file_length <= 0:
        return 0
    return -(-http_file_length // piece_size)


def framed_length(raw_length: int, piece_size: int) -> int:
    return max(raw_length, 0) + FRAME_OVERHEAD * piece_count(raw_length, piece_size)


def piece_range(piece_num: int, piece_size: int) -> str:
    """Framed byte range of a piece slot; never shortened for the last piece."""
    start = piece_num * piece_size
    return f"{start}-{start + piece_size - 1}"


_MAX_DIGITS = 19
_ASCII_DIGITS = frozenset("0123456789")


def _is_offset(text: str) -> bool:
    return 0 < len(text) <= _MAX_DIGITS and _ASCII_DIGITS.issuperset(text)


def parse_range(value: str) -> tuple[int, int] | None:
    """``"start-end"`` → (start, end); None when malformed or reversed.

    ASCII digits only (``str.isdigit`` also takes ``²``, which ``int`` then refuses), and at most
    ``_MAX_DIGITS`` of them: an int64 offset, as in Go, and far below ``int``'s 4,300-digit limit.
    """
    start_text, sep, end_text = value.partition("-")
    if not sep or not _is_offset(start_text) or not _is_offset(end_text):
        return None
    start, end = int(start_text), int(end_text)
    if end < start:
        return None
    return start, end


def piece_num_of_range(value: str) -> int:
    """Piece number of a framed range, ``start / (end-start+1)``; -1 when invalid."""
    parsed = parse_range(value)
    if parsed is None:
        return -1
    start, end = parsed
    return start // (end - start + 1)


def frame_header(data_len: int, piece_size: int) -> bytes:
    """Big-endian ``dataLen | pieceSize << 4`` (32-bit), bit-exact with the Go writer."""
    return _HEADER.pack((data_len | (piece_size << 4)) & 0xFFFFFFFF)


def frame_piece(payload: bytes, piece_size: int) -> bytes:
    return frame_header(len(payload), piece_size) + payload + TRAILER


def unframe_piece(body: bytes) -> bytes:
    """Strip header and trailer the way dfget does (it never validates them)."""
    return body[4:-1] if len(body) >= FRAME_OVERHEAD else b""


def header_data_len(header: bytes) -> int:
    """Payload length from a frame header: its low 24 bits."""
    value: int = _HEADER.unpack(header[:4])[0]
    return value & 0xFFFFFF


def piece_md5(framed: bytes) -> str:
    """``md5hex:framedLength`` as stored by the CDN writer and sent in ``pieceMd5``."""
    return f"{hashlib.md5(framed).hexdigest()}:{len(framed)}"
