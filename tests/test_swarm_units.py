"""Pure parts of df-swarm: argument parsing, percentiles, piece byte counts, the sizing formula."""

from __future__ import annotations

import argparse

import pytest

from app.protocol.pieces import framed_length, piece_size_for
from app.swarm.cli import build_parser, byte_size, duration, node_list
from app.swarm.report import framed_size, percentile, range_length
from app.swarm.sizing import Constants, Rollout, size

CONSTANTS = Constants(requests_per_core=1000.0, target_p99_ms=200.0, requests_per_piece=2.0,
                      requests_per_download=2.0, redis_bytes_per_peer=3000.0, redis_bytes_per_task=20000.0,
                      measured_pieces=17, piece_bytes_per_core=1e9, seed_copies=3.0)


def test_sizes_rates_and_durations_parse_and_bad_ones_are_refused() -> None:
    assert byte_size("64MiB") == 64 << 20 and byte_size("8MB") == 8_000_000 and byte_size("8MB/s") == 8_000_000
    assert byte_size("1.5GiB") == 3 << 29 and byte_size("4096") == 4096
    assert duration("10m") == 600 and duration("90") == 90 and duration("2h") == 7200
    assert node_list("a,b:9000") == ["a:8002", "b:9000"]
    for bad in ("", "12 parsecs", "-1MB", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            byte_size(bad)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--size", "lots"])
    assert exited.value.code == 2


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5.0 and percentile(values, 99) == 10.0 and percentile([], 50) == 0.0


def test_piece_bytes_are_framed_and_the_last_range_is_clipped() -> None:
    raw = 13 * 1024 * 1024
    piece = piece_size_for(raw)
    total = framed_size(raw, piece)
    assert total == framed_length(raw, piece)  # the protocol module's own rule
    assert range_length(f"0-{piece - 1}", total) == piece
    assert range_length(f"{3 * piece}-{4 * piece - 1}", total) == total - 3 * piece


def test_the_sizing_scales_with_hosts_and_keeps_a_spare() -> None:
    small = size(CONSTANTS, Rollout(hosts=100, image_size=1 << 30, window=600))
    big = size(CONSTANTS, Rollout(hosts=10_000, image_size=1 << 30, window=600))
    assert small.replicas == 2  # one is enough for the load, plus the spare
    assert big.requests_per_second == pytest.approx(100 * small.requests_per_second)
    assert big.replicas == big.replicas_for_requests + 1 > small.replicas
    task = CONSTANTS.redis_bytes_per_task
    assert big.redis_bytes - task == pytest.approx(100 * (small.redis_bytes - task), abs=100)
    # A 1 GiB layer has 86 pieces of 12 MiB: (2 + 2 × 86) requests per host, over the window, twice at peak;
    # each peer's state grows with its pieces (86 / 17 of the measured task's).
    assert small.pieces == 86 and small.requests_per_second == pytest.approx(100 * (2 + 2 * 86) / 600 * 2, rel=1e-3)
    assert small.redis_bytes == pytest.approx(100 * 3000 * 86 / 17 + task, abs=1)
