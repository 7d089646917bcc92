"""The raw (unframed) data file dfget writes pieces into (PROTOCOL §9.6).

In p2p pattern it is ``<dataDir>/<taskFileName>.service``, which the uploader serves while the download
is still running; in cdn pattern a temporary file next to the output.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path


class PieceFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_TRUNC: dfget recreates the service file for every download.
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    async def write(self, offset: int, payload: bytes) -> None:
        fd = self._fd
        if fd is None or not payload:
            return
        # Pieces are up to 15 MiB; keep the event loop free while the kernel copies them.
        await asyncio.to_thread(os.pwrite, fd, payload, offset)

    def truncate(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def place_file(src: Path, output: Path, *, keep_src: bool) -> None:
    """Put a finished file at ``output`` atomically; keep ``src`` (hard link) when it is still served."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not keep_src:
        os.replace(src, output)
        return
    tmp = output.with_name(f".{output.name}.dfget-link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)  # other file system: dfget falls back to a copy as well
    os.replace(tmp, output)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
