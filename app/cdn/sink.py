"""What the seeder reports to the cluster state while it fills the seed cache.

The Redis-backed implementation lives in ``app.state.store``; the seeder only sees this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SeedJob:
    """Everything the seeder needs to know about one task, read from shared state."""

    tid: str
    epoch: int
    raw_url: str
    task_url: str
    headers: dict[str, str] = field(default_factory=dict)
    md5: str = ""
    identifier: str = ""
    http_file_length: int = -1
    piece_size: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class SeedOutcome:
    success: bool
    file_length: int = 0  # framed length on disk
    raw_length: int = 0
    real_md5: str = ""
    piece_total: int = 0
    error: str = ""
    # Source failure classification (see app.cdn.source): "not_found", "auth", "server", "unreachable",
    # "truncated", "length_changed", "md5_mismatch", "storage", "lease_lost", "internal", "forbidden" (the
    # source policy refused a URL or redirect hop, app.cdn.policy), or "" on success.
    reason: str = ""


class SeedSink(Protocol):
    async def piece_ready(self, tid: str, epoch: int, piece_num: int, md5: str, seeded_bytes: int) -> bool:
        """Publish one piece after it is on disk and fsync'd. False: this seeder lost its lease; stop."""

    async def pieces_ready(self, tid: str, epoch: int, md5s: list[str], seeded_bytes: int) -> bool:
        """Publish many pieces at once (a full cache hit)."""

    async def heartbeat(self, tid: str, epoch: int) -> bool:
        """Extend this seeder's lease. False: another seeder owns the task now; stop."""

    async def finished(self, tid: str, epoch: int, outcome: SeedOutcome) -> None: ...
