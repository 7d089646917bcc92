"""Piece scheduling (PROTOCOL §11.4) as a pure function over plain data.

The Redis pull script gathers a :class:`Snapshot`; :func:`schedule` picks sources; the assign script
commits the picks atomically, re-checking limits that other replicas may have used meanwhile.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CDN = "cdn"


@dataclass(frozen=True)
class Candidate:
    """A peer that holds at least one wanted piece."""

    port: int
    serving_errors: int
    load: int
    ip: str = ""


@dataclass(frozen=True)
class PieceView:
    num: int
    md5: str
    holder_count: int
    holders: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    pieces: Sequence[PieceView]
    running: Sequence[int]
    candidates: Mapping[str, Candidate]
    cdn_load: int
    black: frozenset[str] = field(default_factory=frozenset)
    client_errors: int = 0
    requester_ip: str = ""


@dataclass(frozen=True)
class Limits:
    peer_down: int = 4
    peer_up: int = 5
    cdn_load: int = 4
    fail_count: int = 5
    elimination: int = 5


def pull_window(setting: int, peer_down: int) -> int:
    """Pieces a pull's snapshot holds (DF_PULL_WINDOW_PIECES): never fewer than twice the pieces the
    client may fetch at once, so that a piece whose holders are all busy still leaves another to try."""
    return max(setting, 2 * peer_down)


def schedule(snapshot: Snapshot, limits: Limits, rng: random.Random) -> list[tuple[int, str]]:
    """Choose up to ``peer_down - running`` (piece, source) pairs; the source is a cid or :data:`CDN`.

    Rarest pieces first (fewest peer holders), then those nearest to the pieces already running, ties
    at random. Each piece goes to an eligible peer holder if there is one, else to the seed cache while
    the task's seed-cache load allows; otherwise the piece is skipped for now.
    """
    slots = limits.peer_down - len(snapshot.running)
    if slots <= 0:
        return []
    center = sum(snapshot.running) // len(snapshot.running) if snapshot.running else 0
    ordered = sorted(snapshot.pieces, key=lambda p: (p.holder_count, abs(p.num - center), rng.random()))

    loads = {cid: candidate.load for cid, candidate in snapshot.candidates.items()}
    cdn_load = snapshot.cdn_load
    cdn_only = snapshot.client_errors > limits.fail_count
    picks: list[tuple[int, str]] = []
    for piece in ordered:
        if len(picks) >= slots:
            break
        source = None if cdn_only else _pick_holder(piece, snapshot, limits, loads, rng)
        if source is None:
            if cdn_load + 1 > limits.cdn_load:
                continue
            cdn_load += 1
            source = CDN
        picks.append((piece.num, source))
    return picks


def _pick_holder(
    piece: PieceView, snapshot: Snapshot, limits: Limits, loads: dict[str, int], rng: random.Random
) -> str | None:
    # Least-loaded first spreads uploads across the swarm instead of piling onto one early holder; ties
    # at random (a random sort key: random.shuffle costs several times more, on every pull).
    for cid in sorted(piece.holders, key=lambda cid: (loads.get(cid, 0), rng.random())):
        candidate = snapshot.candidates.get(cid)
        if candidate is None or candidate.port <= 0 or cid in snapshot.black:
            continue
        if _loopback(candidate.ip) and not _loopback(snapshot.requester_ip):
            continue  # a peer that bound 127.x is reachable from its own host only (§16.2)
        if candidate.serving_errors >= limits.elimination or loads[cid] + 1 > limits.peer_up:
            continue
        loads[cid] += 1
        return cid
    return None


def _loopback(ip: str) -> bool:
    return ip.startswith("127.")
