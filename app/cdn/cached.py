"""A finished copy in the seed cache: its piece md5s, from the ``.md5`` file (§9.4) or a re-scan."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from app.cdn.sink import SeedJob
from app.cdn.storage import SeedStorage
from app.protocol.pieces import FRAME_OVERHEAD, frame_header, header_data_len


def md5_file_lines(piece_md5s: list[str], real_md5: str) -> list[str]:
    """The ``.md5`` file (§9.4): piece lines, the whole-file md5, SHA-1 of all previous lines."""
    lines = [*piece_md5s, real_md5]
    return [*lines, hashlib.sha1("".join(lines).encode()).hexdigest()]


def cached_piece_md5s(storage: SeedStorage, job: SeedJob, meta: dict[str, Any]) -> list[str] | None:
    """Piece md5s of a finished copy, from a valid ``.md5`` file or else by re-scanning the data."""
    framed = meta.get("fileLength")
    real_md5 = meta.get("realMd5")
    if not isinstance(framed, int) or framed < FRAME_OVERHEAD or not isinstance(real_md5, str):
        return None
    try:
        if os.stat(storage.data_path(job.tid)).st_size != framed:
            return None
    except FileNotFoundError:
        return None
    lines = storage.read_md5_lines(job.tid)
    if lines and len(lines) >= 3 and md5_file_lines(lines[:-2], real_md5) == lines:
        pieces = lines[:-2]
        sizes = [line.rpartition(":")[2] for line in pieces]
        if all(size.isdigit() for size in sizes) and sum(map(int, sizes)) == framed:
            return pieces
    scanned = _rescan(storage, job.tid, job.piece_size, framed)
    if scanned is None or scanned[1] != real_md5:
        return None
    storage.write_md5_lines(job.tid, md5_file_lines(scanned[0], real_md5))
    return scanned[0]


def _rescan(storage: SeedStorage, tid: str, piece_size: int, framed: int) -> tuple[list[str], str] | None:
    """Walk the framed file piece by piece (header length, trailer check); None if it is malformed."""
    md5s: list[str] = []
    whole = hashlib.md5()
    with open(storage.data_path(tid), "rb") as handle:
        for offset in range(0, framed, piece_size):
            handle.seek(offset)
            header = handle.read(4)
            if len(header) != 4:
                return None
            data_len = header_data_len(header)
            rest = handle.read(data_len + 1)
            if header != frame_header(data_len, piece_size) or len(rest) != data_len + 1 or rest[-1] != 0x7F:
                return None
            whole.update(memoryview(rest)[:-1])
            md5s.append(f"{hashlib.md5(header + rest).hexdigest()}:{data_len + FRAME_OVERHEAD}")
    return md5s, whole.hexdigest()
