"""What one df-swarm run tells its user: per-peer outcomes and the swarm's totals (pure).

Bytes by source are what the peers *received*, counted like the supernode counts them
(app/state/traffic.py): once per (peer, piece), at the framed size of the piece's range, split into
``peer`` (another dfget's uploader) and ``seed`` (a ``cdnnode:`` source); ``source`` is what peers read
from the origin when they went back to source (raw bytes). ``duplicate`` is framed bytes of pieces a
peer fetched more than once (not in the split). Source egress is the origin's own count when df-swarm
serves the file itself, so it includes the supernode's seeder.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.swarm.result import CDN_CID_PREFIX, DfgetResult


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values): p99 of 10 values is the largest, never interpolated."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def framed_size(file_length: int, piece_size: int) -> int:
    """The seed cache's file: every piece carries 5 framing bytes (PROTOCOL §9) around its payload."""
    if file_length <= 0 or piece_size <= 5:
        return 0
    return file_length + 5 * -(-file_length // (piece_size - 5))


def range_length(text: str, framed_total: int = 0) -> int:
    """Bytes of a piece range; the last piece's range runs past the end of the file, so it is clipped."""
    first, _, last = text.partition("-")
    try:
        start, end = int(first), int(last)
    except ValueError:
        return 0
    if framed_total > 0:
        end = min(end, framed_total - 1)
    return max(end - start + 1, 0)


@dataclass(frozen=True)
class PeerRow:
    index: int
    ip: str
    version: str
    started: float  # seconds after the run began
    duration: float
    success: bool
    sha256_ok: bool | None  # None: not checked (left, control plane only, or no expected digest)
    churned: bool
    back_sourced: bool
    back_source_reason: int
    bytes_peer: int
    bytes_seed: int
    bytes_source: int
    bytes_duplicate: int
    peer_fetch_failures: int  # piece GETs to another peer's uploader that failed (unreachable peers show here)
    registrations: int
    migrations: int
    task_id: str
    error: str

    @property
    def ok(self) -> bool:
        """Got the right bytes (or, left on purpose, is not judged)."""
        return self.churned or (self.success and self.sha256_ok is not False)


def peer_row(index: int, ip: str, version: str, started: float, result: DfgetResult, *,
             expected_sha256: str | None, churned: bool) -> PeerRow:
    seen: set[str] = set()
    split: Counter[str] = Counter()
    total = framed_size(result.file_length, result.piece_size)
    failures = 0
    for fetch in result.piece_fetches:
        if not fetch.ok:
            failures += not fetch.src_cid.startswith(CDN_CID_PREFIX)
            continue
        length = range_length(fetch.range, total)
        if fetch.range in seen:
            split["duplicate"] += length
            continue
        seen.add(fetch.range)
        split["seed" if fetch.src_cid.startswith(CDN_CID_PREFIX) else "peer"] += length
    if result.back_sourced and result.success:
        split["source"] += result.bytes
    checked: bool | None = None
    if not churned and result.success and result.sha256 is not None and expected_sha256:
        checked = result.sha256 == expected_sha256
    elif not churned and result.success and result.sha256 is None and expected_sha256:
        checked = False if result.bytes else None  # control plane only moves no bytes to check
    return PeerRow(
        index=index, ip=ip, version=version, started=round(started, 3), duration=round(result.duration, 3),
        success=result.success, sha256_ok=checked, churned=churned, back_sourced=result.back_sourced,
        back_source_reason=result.back_source_reason, bytes_peer=split["peer"], bytes_seed=split["seed"],
        bytes_source=split["source"], bytes_duplicate=split["duplicate"],
        peer_fetch_failures=failures, registrations=result.registrations,
        migrations=result.migrations, task_id=result.task_id, error=result.error,
    )


@dataclass
class ControlPlane:
    requests: int = 0
    rate: float = 0.0  # requests per second of the run
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # endpoint -> "http/code" -> count
    transport_errors: dict[str, int] = field(default_factory=dict)  # endpoint -> no HTTP 200 answer


def control_plane(results: Sequence[DfgetResult], wall: float) -> ControlPlane:
    answers: dict[str, Counter[str]] = {}
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    for result in results:
        for exchange in result.exchanges:
            latencies.append(exchange.elapsed)
            status = "none" if exchange.http_status is None else str(exchange.http_status)
            code = "" if exchange.code is None else f"/{exchange.code}"
            answers.setdefault(exchange.endpoint, Counter())[status + code] += 1
            if exchange.http_status != 200:
                errors[exchange.endpoint] += 1
    return ControlPlane(
        requests=len(latencies), rate=round(len(latencies) / wall, 1) if wall > 0 else 0.0,
        latency_p50_ms=round(percentile(latencies, 50) * 1000, 2),
        latency_p99_ms=round(percentile(latencies, 99) * 1000, 2),
        answers={k: dict(sorted(v.items())) for k, v in sorted(answers.items())},
        transport_errors=dict(sorted(errors.items())),
    )


@dataclass
class SwarmReport:
    mode: str  # "p2p", "native" or "control-plane"
    peers: list[PeerRow]
    wall: float
    file_size: int
    expected_sha256: str | None
    source_egress: int | None  # None when the file is someone else's (--url)
    source_stats: dict[str, Any] | None
    control: ControlPlane
    pieces_uploaded: int = 0  # by the emulated peers' uploaders
    settings: dict[str, Any] = field(default_factory=dict)
    supernode_traffic: dict[str, int] | None = None  # the REST API's per-task split, when it was read

    @property
    def judged(self) -> list[PeerRow]:
        return [p for p in self.peers if not p.churned]

    @property
    def success(self) -> bool:
        """Exit status 0: every peer that did not leave on purpose got the right bytes."""
        return bool(self.judged) and all(p.ok for p in self.judged)

    def completion(self) -> dict[str, float]:
        times = [p.duration for p in self.judged if p.success]
        return {
            "p50": round(percentile(times, 50), 3), "p99": round(percentile(times, 99), 3),
            "mean": round(sum(times) / len(times), 3) if times else 0.0,
            "max": round(max(times), 3) if times else 0.0,
        }

    def bytes_by_source(self) -> dict[str, int]:
        return {
            "peer": sum(p.bytes_peer for p in self.peers), "seed": sum(p.bytes_seed for p in self.peers),
            "source": sum(p.bytes_source for p in self.peers),
            "duplicate": sum(p.bytes_duplicate for p in self.peers),
        }

    def counts(self) -> dict[str, int]:
        judged = self.judged
        return {
            "peers": len(self.peers), "churned": len(self.peers) - len(judged),
            "succeeded": sum(p.success for p in judged), "sha256_ok": sum(p.sha256_ok is True for p in judged),
            "sha256_bad": sum(p.sha256_ok is False for p in judged), "failed": sum(not p.ok for p in judged),
            "back_sourced": sum(p.back_sourced for p in self.peers),
            "migrations": sum(p.migrations for p in self.peers),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "success": self.success, "wall_seconds": round(self.wall, 3),
            "file_size": self.file_size, "sha256": self.expected_sha256, "counts": self.counts(),
            "completion_seconds": self.completion(), "bytes_by_source": self.bytes_by_source(),
            "source_egress": self.source_egress, "source": self.source_stats,
            "pieces_uploaded_by_peers": self.pieces_uploaded, "control_plane": asdict(self.control),
            "supernode_traffic": self.supernode_traffic, "settings": self.settings,
            "peers": [asdict(p) for p in self.peers],
        }

    def csv(self) -> str:
        out = io.StringIO()
        names = list(PeerRow.__dataclass_fields__)
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for peer in self.peers:
            writer.writerow(asdict(peer))
        return out.getvalue()

    def summary(self) -> str:
        """One screen for the terminal."""
        c, t, b, cp = self.counts(), self.completion(), self.bytes_by_source(), self.control
        total = b["peer"] + b["seed"] + b["source"]

        def share(n: int) -> str:
            return f"{100 * n / total:5.1f} %" if total else "    - "

        lines = [
            f"df-swarm {self.mode}: {c['peers']} peers, {self.file_size} bytes each, {self.wall:.2f} s wall",
            f"  result     {'OK' if self.success else 'FAILED'}: {c['succeeded']} succeeded, "
            f"{c['sha256_ok']} sha256 ok, "
            f"{c['sha256_bad']} sha256 wrong, {c['failed']} failed, {c['churned']} left on purpose",
            f"  completion p50 {t['p50']:.2f} s  p99 {t['p99']:.2f} s  mean {t['mean']:.2f} s  max {t['max']:.2f} s",
            f"  bytes      peer {b['peer']} ({share(b['peer'])})  seed {b['seed']} ({share(b['seed'])})  "
            f"source {b['source']} ({share(b['source'])})  duplicate {b['duplicate']}",
            f"  back-src   {c['back_sourced']} peers   migrations {c['migrations']}",
        ]
        if self.source_egress is not None and self.source_stats is not None:
            lines.append(f"  source     egress {self.source_egress} bytes, {self.source_stats['full_gets']} full GETs, "
                         f"{self.source_stats['range_gets']} range GETs")
        lines.append(f"  control    {cp.requests} requests, {cp.rate:.1f} req/s, latency p50 {cp.latency_p50_ms} ms "
                     f"p99 {cp.latency_p99_ms} ms, non-200 answers {sum(cp.transport_errors.values())}")
        for endpoint, answers in cp.answers.items():
            lines.append(f"             {endpoint}: " + ", ".join(f"{k}×{v}" for k, v in answers.items()))
        if self.supernode_traffic is not None:
            lines.append(f"  supernode  says peer {self.supernode_traffic.get('peer')} seed "
                         f"{self.supernode_traffic.get('seed')} source {self.supernode_traffic.get('source')}")
        bad = [p for p in self.judged if not p.ok][:5]
        lines += [f"  peer {p.index} ({p.ip}): {p.error or 'wrong bytes'}" for p in bad]
        return "\n".join(lines)
