"""Cost of counting Redis round trips per request (app/observability/roundtrips.py) on the hot path.

Every command a replica sends goes through the counting wrapper of ``send_packed_command``. This times
real round trips to the real Redis on one connection, alternating batches through the wrapper (inside
a request's counter, the hot path's case) and through the original method it wraps (``__wrapped__``),
so that both see the same machine load; the wrapper alone around a no-op, which is its whole added
cost; and the request middleware that starts the count (app/observability/dfget.py) around a no-op
app. One JSON line is printed and appended to benchmarks/ROUNDTRIPS-RESULTS.md.

    .venv/bin/python -m benchmarks.bench_roundtrips [--redis redis://127.0.0.1:6379/1] [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from app.observability import roundtrips
from app.observability.dfget import ObserverMiddleware

RESULTS = Path(__file__).with_name("ROUNDTRIPS-RESULTS.md")
BATCH = 500


async def _batch(conn: Any, send: Any, packed: list[bytes]) -> float:
    started = time.perf_counter()
    for _ in range(BATCH):
        await send(conn, packed)
        await conn.read_response()
    return (time.perf_counter() - started) / BATCH * 1e6


async def measure(url: str, batches: int) -> dict[str, Any]:
    roundtrips.install()
    counted = AbstractConnection.send_packed_command
    original = counted.__wrapped__  # type: ignore[attr-defined]
    client = aioredis.Redis.from_url(url)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        packed = conn.pack_command("GET", "df-bench:roundtrips")
        trips = roundtrips.start()
        plain, wrapped = [], []
        for _ in range(batches):
            plain.append(await _batch(conn, original, packed))
            wrapped.append(await _batch(conn, counted, packed))
        assert trips.count == batches * BATCH  # every wrapped send was counted, no plain one
    finally:
        await pool.release(conn)
        await client.aclose()

    overhead = await _wrapper_alone()
    middleware = await _middleware_alone()
    return {
        "bench": "redis_round_trip_counter",
        "round_trip_us_plain": round(statistics.median(plain), 2),
        "round_trip_us_counted": round(statistics.median(wrapped), 2),
        "wrapper_alone_ns": round(overhead, 1),
        "share_of_a_round_trip": round(overhead / 1000 / statistics.median(plain), 5),
        "observer_middleware_ns": round(middleware, 1),
        "batches": batches, "batch": BATCH,
    }


async def _wrapper_alone() -> float:
    """ns the wrapper adds per call: the same wrapper (``counting``) around a no-op, against the no-op."""

    async def noop(self: Any, *args: Any) -> None:
        return None

    counted = roundtrips.counting(noop)
    roundtrips.start()
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        await counted(None)
    with_wrapper = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n):
        await noop(None)
    return (with_wrapper - (time.perf_counter() - started)) / n * 1e9


async def _middleware_alone() -> float:
    """ns the observer middleware (round-trip counter start, dfget body tap check) adds to a GET."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    wrapped = ObserverMiddleware(app, peer_label=False, max_body=131072)
    scope = {"type": "http", "method": "GET", "path": "/peer/task", "headers": []}
    n = 100_000
    started = time.perf_counter()
    for _ in range(n):
        await wrapped(scope, None, None)
    with_middleware = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n):
        await app(scope, None, None)
    return (with_middleware - (time.perf_counter() - started)) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    result = asyncio.run(measure(args.redis, args.batches))
    line = json.dumps(result)
    print(line)
    with RESULTS.open("a") as out:
        if out.tell() == 0:
            out.write("# Redis round-trip counter: cost on the hot path\n\nOne JSON line per run of "
                      "`python -m benchmarks.bench_roundtrips` (median µs per GET round trip on loopback, "
                      "with and without the wrapper; the wrapper's own cost in ns).\n\n")
        out.write(f"    {time.strftime('%Y-%m-%d %H:%M')} {line}\n")


if __name__ == "__main__":
    main()
