"""The pure scheduler (PROTOCOL §11.4), without I/O."""

from __future__ import annotations

import random

from app.scheduler.core import CDN, Candidate, Limits, PieceView, Snapshot, pull_window, schedule


def piece(num: int, *holders: str) -> PieceView:
    return PieceView(num, f"md5-{num}:4194304", len(holders), tuple(holders))


def peer(load: int = 0, port: int = 40000, errors: int = 0) -> Candidate:
    return Candidate(port=port, serving_errors=errors, load=load)


def run(snapshot: Snapshot, limits: Limits | None = None) -> list[tuple[int, str]]:
    return schedule(snapshot, limits or Limits(), random.Random(7))


def test_first_pull_gets_four_pieces_from_the_cdn() -> None:
    snap = Snapshot(pieces=[piece(n) for n in range(6)], running=[], candidates={}, cdn_load=0)
    picks = run(snap)
    assert [src for _, src in picks] == [CDN] * 4
    assert sorted(n for n, _ in picks) == [0, 1, 2, 3]


def test_running_pieces_reduce_the_slots() -> None:
    snap = Snapshot(pieces=[piece(n) for n in range(4, 6)], running=[0, 1, 2], candidates={}, cdn_load=0)
    assert len(run(snap)) == 1
    full = Snapshot(pieces=[piece(5)], running=[0, 1, 2, 3], candidates={}, cdn_load=0)
    assert run(full) == []


def test_rarest_first_and_peers_preferred() -> None:
    snap = Snapshot(
        pieces=[piece(0, "a", "b"), piece(1, "a"), piece(2)],
        running=[], candidates={"a": peer(), "b": peer()}, cdn_load=0,
    )
    picks = run(snap)
    assert picks[0] == (2, CDN)  # nobody holds it: the seed cache
    assert picks[1] == (1, "a")
    assert picks[2][0] == 0 and picks[2][1] in {"a", "b"}


def test_cdn_load_limit_skips_pieces_nobody_else_has() -> None:
    snap = Snapshot(pieces=[piece(0), piece(1), piece(2, "a")], running=[], candidates={"a": peer()}, cdn_load=3)
    picks = run(snap)
    assert (2, "a") in picks
    assert len([p for p in picks if p[1] == CDN]) == 1


def test_upload_limit_black_list_errors_and_port_zero() -> None:
    snap = Snapshot(
        pieces=[piece(0, "busy", "black", "bad", "cdnmode"), piece(1, "ok")],
        running=[],
        candidates={"busy": peer(load=5), "black": peer(), "bad": peer(errors=5), "cdnmode": peer(port=0),
                    "ok": peer()},
        cdn_load=0, black=frozenset({"black"}),
    )
    picks = dict(run(snap))
    assert picks[0] == CDN
    assert picks[1] == "ok"


def test_one_holder_is_not_given_more_than_its_upload_limit() -> None:
    snap = Snapshot(pieces=[piece(n, "a") for n in range(4)], running=[], candidates={"a": peer(load=3)},
                    cdn_load=4)
    picks = run(snap)
    assert picks == [(picks[0][0], "a"), (picks[1][0], "a")]


def test_a_client_with_too_many_errors_is_served_by_the_cdn_only() -> None:
    snap = Snapshot(pieces=[piece(0, "a")], running=[], candidates={"a": peer()}, cdn_load=0, client_errors=6)
    assert run(snap) == [(0, CDN)]


def test_nearest_to_running_pieces_breaks_ties() -> None:
    snap = Snapshot(pieces=[piece(n) for n in (0, 9, 10)], running=[8, 12, 11], candidates={}, cdn_load=0)
    picks = run(snap, Limits(peer_down=4, cdn_load=4))
    assert [n for n, _ in picks] == [10]


def test_loopback_peers_are_offered_only_to_loopback_requesters() -> None:
    candidates = {"local": Candidate(port=40000, serving_errors=0, load=0, ip="127.0.0.5")}
    remote = Snapshot(pieces=[piece(0, "local")], running=[], candidates=candidates, cdn_load=0,
                      requester_ip="10.0.0.7")
    assert run(remote) == [(0, CDN)]
    same_host = Snapshot(pieces=[piece(0, "local")], running=[], candidates=candidates, cdn_load=0,
                         requester_ip="127.0.0.9")
    assert run(same_host) == [(0, "local")]


def test_the_pull_window_is_never_less_than_twice_the_download_limit() -> None:
    assert pull_window(8, 4) == 8
    assert pull_window(32, 4) == 32
    assert pull_window(8, 10) == 20
    assert pull_window(1, 1) == 2
