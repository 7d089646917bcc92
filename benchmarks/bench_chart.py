"""The seed's headline chart, scaled down to one host: native download time grows with N, P2P stays flat.

The seed's testbed: 200 clients at 100 Mb/s each, one 1,000 Mb/s server. Here (default): clients at
8 MB/s down and up (df-swarm's per-peer token buckets), an origin at 40 MB/s in total, the supernode's
seed cache also limited to 40 MB/s (live limit seedUploadKiBps: the "server" is one link), a 64 MiB file.
Native: every client reads the origin itself (dfget with no supernode). P2P: df-swarm against one
replica (``python -m app``, cluster mode on a private redis-server, seeding in-process). The number
is the mean completion time over the clients of each run.

    .venv/bin/python -m benchmarks.bench_chart --out benchmarks            # N = 10 25 50 100 200
    .venv/bin/python -m benchmarks.bench_chart --clients 10,25 --size 16MiB --out /tmp/chart

Writes CHART-RESULTS.json (after every run, so a long series can be cut short), CHART-RESULTS.md and
chart.png into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.swarm.cli import byte_size
from app.swarm.replica import LocalRedis, LocalReplica
from app.swarm.report import SwarmReport
from app.swarm.runner import RunOptions, run

MB = 1_000_000


def row(n: int, mode: str, report: SwarmReport) -> dict[str, Any]:
    completion = report.completion()
    return {
        "clients": n, "mode": mode, "ok": report.success, "mean_s": completion["mean"], "p50_s": completion["p50"],
        "p99_s": completion["p99"], "max_s": completion["max"], "wall_s": round(report.wall, 2),
        "source_egress": report.source_egress, "bytes": report.bytes_by_source(), "counts": report.counts(),
    }


def write_table(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path, machine: str) -> None:
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_n.setdefault(r["clients"], {})[r["mode"]] = r
    lines = [
        "# The seed's chart, scaled down (df-swarm)", "",
        f"Scale: clients {args.client_rate / MB:g} MB/s down and up each, origin {args.source_rate / MB:g} MB/s, "
        f"seed cache {args.source_rate / MB:g} MB/s, file {args.size / (1 << 20):g} MiB, dfget 1.0.6 peers, "
        f"one replica. (The seed: 100 Mb/s clients, a 1,000 Mb/s server, 200 clients.) Machine: {machine}.",
        "", "Command: `" + " ".join(["python -m benchmarks.bench_chart", *sys.argv[1:]]) + "`", "",
        "| clients | native mean (s) | native p99 (s) | P2P mean (s) | P2P p99 (s) | P2P origin reads | "
        "P2P back to source | P2P bytes from peers | emulator CPU (s) | replica CPU (s) | load | all ok |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|",
    ]
    for n in sorted(by_n):
        native, p2p = by_n[n].get("native"), by_n[n].get("p2p")

        def cell(r: dict[str, Any] | None, key: str) -> str:
            return "—" if r is None else f"{r[key]:.1f}"

        reads = "—" if p2p is None else str(p2p["counts"].get("source_full_gets", "—"))
        share = "—"
        if p2p is not None:
            total = sum(p2p["bytes"][k] for k in ("peer", "seed", "source"))
            share = f"{100 * p2p['bytes']['peer'] / total:.0f} %" if total else "—"
        ok = all(r["ok"] for r in by_n[n].values())
        back = "—" if p2p is None else str(p2p["counts"]["back_sourced"])
        cpu = "—" if p2p is None or "emulator_cpu_s" not in p2p else f"{p2p['emulator_cpu_s']:.0f}"
        rcpu = "—" if p2p is None or "replica_cpu_s" not in p2p else f"{p2p['replica_cpu_s']:.0f}"
        load = "—" if p2p is None or "load1" not in p2p else f"{p2p['load1']:.1f}"
        lines.append(f"| {n} | {cell(native, 'mean_s')} | {cell(native, 'p99_s')} | {cell(p2p, 'mean_s')} | "
                     f"{cell(p2p, 'p99_s')} | {reads} | {back} | {share} | {cpu} | {rcpu} | {load} | "
                     f"{'yes' if ok else 'NO'} |")
    (out / "CHART-RESULTS.md").write_text("\n".join(lines) + "\n")


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    from app.swarm.plot import plot_chart

    native = {r["clients"]: r["mean_s"] for r in rows if r["mode"] == "native"}
    p2p = {r["clients"]: r["mean_s"] for r in rows if r["mode"] == "p2p"}
    both = [(n, native[n], p2p[n]) for n in sorted(native) if n in p2p]
    if both:
        title = (f"{args.size / (1 << 20):g} MiB, clients {args.client_rate / MB:g} MB/s, "
                 f"server {args.source_rate / MB:g} MB/s (the seed's chart, scaled down)")
        plot_chart(both, out / "chart.png", title)


async def one_run(n: int, native: bool, node: str, args: argparse.Namespace, work: Path) -> SwarmReport:
    options = RunOptions(
        nodes=[] if native else [node], peers=n, size=args.size, versions=["1.0.6"], down_rate=args.client_rate,
        up_rate=args.client_rate, source_rate=args.source_rate, native=native, timeout=3600.0, progress=False,
        out_dir=work / f"{'native' if native else 'p2p'}-{n}", seed=n,
    )
    return await run(options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", default="10,25,50,100,200")
    parser.add_argument("--size", type=byte_size, default=64 << 20)
    parser.add_argument("--client-rate", type=byte_size, default=8 * MB)
    parser.add_argument("--source-rate", type=byte_size, default=40 * MB)
    parser.add_argument("--modes", default="native,p2p")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores (shared), Linux, Python {sys.version.split()[0]}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="df-chart-") as tmp:
        work = Path(tmp)
        with LocalRedis(work / "redis") as redis, LocalReplica(
            work / "replica", redis.url, env={"DF_SEED_UPLOAD_KIBPS": str(int(args.source_rate // 1024))}
        ) as replica:
            for n in (int(x) for x in args.clients.split(",")):
                for mode in args.modes.split(","):
                    started, own, theirs = time.monotonic(), os.times(), replica.cpu()
                    report = asyncio.run(one_run(n, mode == "native", replica.node, args, work))
                    result = row(n, mode, report)
                    after = os.times()
                    # Where the time went: this process emulates every client; the replica is the supernode.
                    result["emulator_cpu_s"] = round(after.user + after.system - own.user - own.system, 1)
                    result["replica_cpu_s"] = round(replica.cpu() - theirs, 1)
                    result["load1"] = round(os.getloadavg()[0], 2)
                    result["counts"]["source_full_gets"] = (report.source_stats or {}).get("full_gets")
                    rows.append(result)
                    print(f"N={n:4d} {mode:6s} mean {result['mean_s']:7.2f} s  p99 {result['p99_s']:7.2f} s  "
                          f"ok {report.success}  ({time.monotonic() - started:.0f} s)", flush=True)
                    (args.out / "CHART-RESULTS.json").write_text(json.dumps(
                        {"machine": machine, "argv": sys.argv[1:], "rows": rows}, indent=1) + "\n")
                    write_table(rows, args, args.out, machine)
                    plot(rows, args, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
