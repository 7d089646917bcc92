"""The shared seed cache, behind a small interface so that an object store can be added later.

Layout follows the Go supernode (PROTOCOL §9.4): ``<base>/download/<id[0:3]>/<id>`` holds the framed
file, with ``.meta`` (JSON) and ``.md5`` (piece md5 lines) beside it. Every replica and worker mounts
the same directory, so any replica can serve any seeded piece.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

import orjson


class SeedStorage(Protocol):
    def data_path(self, tid: str) -> Path:
        """Local path of the framed file (the download server sendfile()s from it)."""

    def read_meta(self, tid: str) -> dict[str, Any] | None: ...

    def write_meta(self, tid: str, meta: dict[str, Any]) -> None: ...

    def read_md5_lines(self, tid: str) -> list[str] | None: ...

    def write_md5_lines(self, tid: str, lines: list[str]) -> None: ...

    def open_for_write(self, tid: str, truncate: bool) -> int:
        """A raw file descriptor for positional writes (os.pwrite) of framed pieces."""

    def delete(self, tid: str) -> None: ...

    def disk_usage(self) -> int:
        """Bytes used by seed files."""


class LocalSeedStorage:
    """A directory on a (possibly shared, RWX) filesystem."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.download_dir = base / "download"
        self.download_dir.mkdir(parents=True, exist_ok=True)

    def data_path(self, tid: str) -> Path:
        return self.download_dir / tid[:3] / tid

    def _sibling(self, tid: str, suffix: str) -> Path:
        return self.download_dir / tid[:3] / f"{tid}{suffix}"

    def read_meta(self, tid: str) -> dict[str, Any] | None:
        try:
            loaded = orjson.loads(self._sibling(tid, ".meta").read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def write_meta(self, tid: str, meta: dict[str, Any]) -> None:
        self._atomic_write(self._sibling(tid, ".meta"), orjson.dumps(meta))

    def read_md5_lines(self, tid: str) -> list[str] | None:
        try:
            return self._sibling(tid, ".md5").read_text().split("\n")
        except FileNotFoundError:
            return None

    def write_md5_lines(self, tid: str, lines: list[str]) -> None:
        self._atomic_write(self._sibling(tid, ".md5"), "\n".join(lines).encode())

    def open_for_write(self, tid: str, truncate: bool) -> int:
        path = self.data_path(tid)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        return os.open(path, flags, 0o644)

    def delete(self, tid: str) -> None:
        for path in (self.data_path(tid), self._sibling(tid, ".meta"), self._sibling(tid, ".md5")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def disk_usage(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.download_dir):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
        return total

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        # Readers on other hosts must never see a half-written metadata file.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
