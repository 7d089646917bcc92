"""The sizing formula of ``df-swarm capacity`` (pure): measured constants + a rollout → replicas, Redis, seed.

Inputs: ``hosts`` pulling an image of ``image_size`` bytes in ``layers`` layers (one task per layer)
within ``window`` seconds. Constants (measured on one replica, see capacity.py):

* ``requests_per_piece``: control-plane requests one dfget sends per piece (pulls, piece reports) and
  ``requests_per_download``: the fixed ones (registration, metrics, service/down);
* ``requests_per_core``: requests per second one replica serves per CPU core at the target p99;
* ``redis_bytes_per_peer`` (at ``measured_pieces`` pieces per task) and ``redis_bytes_per_task`` (a new
  task with its first peer);
* ``piece_bytes_per_core``: seed-cache bytes per second one replica serves per core;
* ``seed_copies``: how many times the seed cache served each byte of a file in a P2P swarm.

Formula (``peak`` = how much busier the busiest second is than the window's average):

    pieces      = layers × ceil(layer_size / (piece_size − 5))      (piece_size as the supernode picks it)
    req/s       = hosts × (layers × requests_per_download + pieces × requests_per_piece) / window × peak
    seed B/s    = seed_copies × image_size / window × peak
    replicas    = max(ceil(req/s / (requests_per_core × cores)), ceil(seed B/s / (piece_bytes_per_core × cores)))
                  + 1 spare (one replica down for a rolling restart or a failure), at least 2
    redis bytes = hosts × layers × redis_bytes_per_peer × max(1, pieces per layer / measured_pieces)
                  + layers × redis_bytes_per_task;   recommended maxmemory = 2 × that (fork for persistence,
                  fragmentation)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from app.protocol.pieces import piece_count, piece_size_for


@dataclass(frozen=True)
class Constants:
    requests_per_core: float
    target_p99_ms: float
    requests_per_piece: float
    requests_per_download: float
    redis_bytes_per_peer: float
    redis_bytes_per_task: float
    measured_pieces: int
    piece_bytes_per_core: float
    seed_copies: float

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Constants:
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Rollout:
    hosts: int
    image_size: int
    window: float
    layers: int = 1
    peak: float = 2.0
    cores_per_replica: float = 1.0  # a replica is one asyncio process: more cores need more processes


@dataclass(frozen=True)
class Sizing:
    pieces: int
    requests_per_second: float
    seed_bytes_per_second: float
    replicas_for_requests: int
    replicas_for_pieces: int
    replicas: int
    redis_bytes: int
    redis_maxmemory: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def size(c: Constants, r: Rollout) -> Sizing:
    layer = max(r.image_size // max(r.layers, 1), 1)
    per_layer = piece_count(layer, piece_size_for(layer))
    pieces = r.layers * per_layer
    rps = r.hosts * (r.layers * c.requests_per_download + pieces * c.requests_per_piece) / r.window * r.peak
    seed_bps = c.seed_copies * r.image_size / r.window * r.peak
    for_requests = math.ceil(rps / (c.requests_per_core * r.cores_per_replica))
    for_pieces = math.ceil(seed_bps / (c.piece_bytes_per_core * r.cores_per_replica))
    redis = (r.hosts * r.layers * c.redis_bytes_per_peer * max(1.0, per_layer / max(c.measured_pieces, 1))
             + r.layers * c.redis_bytes_per_task)
    return Sizing(
        pieces=pieces, requests_per_second=round(rps, 1), seed_bytes_per_second=round(seed_bps),
        replicas_for_requests=for_requests, replicas_for_pieces=for_pieces,
        replicas=max(for_requests, for_pieces, 1) + 1, redis_bytes=round(redis), redis_maxmemory=round(2 * redis),
    )


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"


def explain(c: Constants, r: Rollout, s: Sizing) -> str:
    return "\n".join([
        f"sizing for {r.hosts} hosts pulling {human(r.image_size)} in {r.layers} layer(s) within {r.window:g} s "
        f"(peak {r.peak:g}× the average, {r.cores_per_replica:g} core(s) per replica):",
        f"  pieces          {s.pieces} ({piece_size_for(max(r.image_size // r.layers, 1)) >> 20} MiB each)",
        f"  control plane   {s.requests_per_second:.0f} req/s at peak; one core serves {c.requests_per_core:.0f} "
        f"req/s at p99 ≤ {c.target_p99_ms:g} ms → {s.replicas_for_requests} replica(s)",
        f"  seed cache      {human(s.seed_bytes_per_second)}/s at peak ({c.seed_copies:.2f} copies of the image); "
        f"one core serves {human(c.piece_bytes_per_core)}/s → {s.replicas_for_pieces} replica(s)",
        f"  replicas        {s.replicas} (the larger need, plus one spare for a restart or a failure)",
        f"  Redis           {human(s.redis_bytes)} of state ({c.redis_bytes_per_peer:.0f} B per peer, "
        f"{c.redis_bytes_per_task:.0f} B per task); maxmemory ≥ {human(s.redis_maxmemory)}",
        f"  seed bandwidth  ≥ {human(s.seed_bytes_per_second)}/s from the shared seed volume",
    ])
