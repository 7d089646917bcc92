"""The shared seed cache, behind a small interface so that an object store can be added later.

Layout follows the Go supernode (PROTOCOL §9.4): ``<base>/download/<id[0:3]>/<id>`` holds the framed
file, with ``.meta`` (JSON) and ``.md5`` (piece md5 lines) beside it. Every replica and worker mounts
the same directory, so any replica can serve any seeded piece. Ours adds ``.journal`` while a seed runs:
the id of the download (also in ``.meta``), then one ``<md5>:<framed length>`` line per piece, appended
and fsync'd only after the piece itself was fsync'd, so that a seed restarted after a crash knows which
pieces are durable (see app.cdn.resume).
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

    def open_for_read(self, tid: str) -> int:
        """A raw read-only descriptor of the framed file; OSError when it is missing, or when it or
        its prefix directory is a symlink (a symlink could point anywhere outside the cache)."""

    def read_meta(self, tid: str) -> dict[str, Any] | None: ...

    def write_meta(self, tid: str, meta: dict[str, Any]) -> None: ...

    def read_md5_lines(self, tid: str) -> list[str] | None: ...

    def write_md5_lines(self, tid: str, lines: list[str]) -> None: ...

    def open_for_write(self, tid: str, truncate: bool) -> int:
        """A raw file descriptor for positional writes (os.pwrite) of framed pieces."""

    def read_journal(self, tid: str) -> list[str]:
        """The complete lines of the piece journal (a torn last line is left out); [] when none."""

    def write_journal(self, tid: str, lines: list[str]) -> None:
        """Replace the journal atomically (a resume keeps the lines of the pieces it verified)."""

    def open_journal(self, tid: str) -> int:
        """A raw descriptor appending to the journal (os.write of one line, then os.fsync)."""

    def reset(self, tid: str) -> None:
        """Forget a seed's progress (journal, .md5, .meta) but keep the data file: it is rewritten in
        place, so a piece upload still reading an old piece never sees a hole."""

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

    def open_for_read(self, tid: str) -> int:
        # O_NOFOLLOW on both components below the download directory (which the operator chose and
        # may itself be a mount or a symlink): the kernel refuses a symlink with ELOOP, in the same
        # open() calls, so there is no check-then-open race and the sendfile path pays two extra
        # syscalls at most, not a realpath() walk.
        nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        prefix = os.open(self.download_dir / tid[:3], nofollow | os.O_DIRECTORY)
        try:
            return os.open(tid, nofollow, dir_fd=prefix)
        finally:
            os.close(prefix)

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

    def read_journal(self, tid: str) -> list[str]:
        try:
            text = self._sibling(tid, ".journal").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return text.split("\n")[:-1]  # the part after the last newline is torn (or empty)

    def write_journal(self, tid: str, lines: list[str]) -> None:
        self._atomic_write(self._sibling(tid, ".journal"), "".join(f"{line}\n" for line in lines).encode())

    def open_journal(self, tid: str) -> int:
        path = self._sibling(tid, ".journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def reset(self, tid: str) -> None:
        for suffix in (".journal", ".md5", ".meta"):
            with contextlib.suppress(FileNotFoundError):
                self._sibling(tid, suffix).unlink()

    def delete(self, tid: str) -> None:
        self.reset(tid)
        with contextlib.suppress(FileNotFoundError):
            self.data_path(tid).unlink()

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
