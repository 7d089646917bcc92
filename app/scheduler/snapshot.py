"""The pull script's snapshot (pull.lua, JSON) as the pure scheduler's input."""

from __future__ import annotations

from typing import Any

from app.scheduler.core import Candidate, PieceView, Snapshot


def to_snapshot(out: dict[str, Any]) -> Snapshot:
    # cjson turns empty Lua tables into {}; treat them as empty lists.
    pieces = [
        PieceView(int(p[0]), p[1], int(p[2]), tuple(p[3]) if isinstance(p[3], list) else ())
        for p in (out.get("pieces") or [])
    ]
    raw_candidates = out.get("candidates") or {}
    candidates = {
        cid: Candidate(int(c[0]), int(c[1]), int(c[2]), str(c[3]) if len(c) > 3 else "")
        for cid, c in raw_candidates.items()
    }
    running = out.get("running") or []
    black = out.get("black") or []
    return Snapshot(
        pieces=pieces,
        running=[int(n) for n in running] if isinstance(running, list) else [],
        candidates=candidates,
        cdn_load=int(out.get("cdnLoad", 0)),
        black=frozenset(black if isinstance(black, list) else []),
        client_errors=int(out.get("errors", 0)),
        requester_ip=str(out.get("ip", "")),
    )

