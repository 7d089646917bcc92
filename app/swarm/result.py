"""What one emulated dfget run reports back to the test or benchmark that drove it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.swarm.api import Exchange

CDN_CID_PREFIX = "cdnnode:"


@dataclass(frozen=True)
class PieceFetch:
    """One piece download attempt (or an instant one in control-plane mode)."""

    src_cid: str
    peer: str
    range: str
    http_status: int | None
    ok: bool
    reason: str = ""


@dataclass
class DfgetResult:
    success: bool = False
    error: str = ""
    cid: str = ""
    task_file_name: str = ""
    task_id: str = ""
    node: str = ""  # node of the last successful registration
    file_length: int = -1  # raw length announced at registration
    piece_size: int = 0
    bytes: int = 0
    sha256: str | None = None
    md5_mismatch: bool = False
    back_sourced: bool = False
    back_source_reason: int = 0  # dfget's codes (§8.8); +1000 when refused by back_source=False
    registrations: int = 0  # successful /peer/registry answers
    register_attempts: int = 0
    migrations: int = 0  # times a pull answer/transport error triggered re-registration
    pulls: int = 0
    duration: float = 0.0
    pieces_by_cid: Counter[str] = field(default_factory=Counter)
    piece_failures: int = 0
    piece_fetches: list[PieceFetch] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    supernode_5xx: bool = False
    traceback: str = ""  # set when the emulator itself raised (a bug or an unexpected environment)

    @property
    def pieces_from_cdn(self) -> int:
        return sum(n for cid, n in self.pieces_by_cid.items() if cid.startswith(CDN_CID_PREFIX))

    @property
    def pieces_from_peers(self) -> int:
        return sum(n for cid, n in self.pieces_by_cid.items() if not cid.startswith(CDN_CID_PREFIX))

    def codes(self, endpoint: str) -> list[int | None]:
        """``code`` of every answer on one endpoint, e.g. ``codes("/peer/task")``."""
        return [e.code for e in self.exchanges if e.endpoint == endpoint]

    def nodes_used(self, endpoint: str | None = None) -> Counter[str]:
        return Counter(e.node for e in self.exchanges if endpoint is None or e.endpoint == endpoint)
