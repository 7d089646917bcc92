"""Static settings of one emulated dfget run, with the version switches that change wire behaviour."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from app.swarm.wire import parse_version

Version = tuple[int, int, int]


@dataclass(frozen=True)
class VersionTraits:
    """Behaviour differences between dfget releases that a supernode can observe (PROTOCOL §17)."""

    version: Version

    @property
    def stops_on_607(self) -> bool:
        return self.version >= (0, 4, 3)

    @property
    def backoff_602(self) -> bool:
        """50-100 ms doubling wait, early wake-up, and 602 accepted by the main loop."""
        return self.version >= (1, 0, 1)

    @property
    def duplicates_node_list(self) -> bool:
        """≤ 1.0.4 lists the nodes twice; 1.0.5+ once, never re-registering with the last entry (§5.1)."""
        return self.version < (1, 0, 5)

    @property
    def reports_suc_in_cdn_pattern(self) -> bool:
        return self.version >= (1, 0, 5)

    @property
    def uses_finish_md5(self) -> bool:
        return self.version >= (1, 0, 6)

    @property
    def sends_metrics(self) -> bool:
        return self.version >= (1, 0, 0)

    @property
    def back_source_after_timeout(self) -> bool:
        return self.version >= (1, 0, 0)

    @property
    def wait_auth_sleep(self) -> float:
        return 1.0 if self.version >= (1, 0, 5) else 2.5

    def piece_timeout(self, piece_size: int) -> float | None:
        """Per piece GET: none in 0.4.x (connect 3 s only); 1.0.x pieceSize/64 KiB + 10 s."""
        if self.version >= (1, 0, 0):
            return piece_size / (64 * 1024) + 10.0
        return None


@dataclass(frozen=True)
class ClientConfig:
    cid: str
    sign: str
    ip: str
    host_name: str
    url: str
    task_url: str
    output: Path
    task_file_name: str
    version: str
    headers: tuple[str, ...] = ()
    md5: str = ""
    identifier: str = ""
    call_system: str = ""
    dfdaemon: bool = False
    instant_pieces: bool = False
    sleep_scale: float = 1.0
    poll_timeout: float = 2.0
    max_concurrent_pieces: int = 4
    rate_limit: int | None = None  # bytes/s over piece bodies (dfget --locallimit); None: unlimited
    rng: random.Random = field(default_factory=random.Random)

    @property
    def traits(self) -> VersionTraits:
        return VersionTraits(parse_version(self.version))

    @property
    def user_agent(self) -> str:
        return f"dfget/{self.version}"
