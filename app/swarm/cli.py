"""``df-swarm``: emulated dfget swarms against any legacy-protocol supernode (ours or a Go one).

    df-swarm --node 10.0.0.5:8002 --peers 50 --size 64MiB --down-rate 8MB --source-rate 40MB --json out.json
    df-swarm check --node VIP:8002          # one screen: does P2P work, and if not, why
    df-swarm capacity --hosts 5000 --image-size 3GiB --window 10m

Exit status of a run: 0 iff every peer (but those told to leave, ``--churn``) got the right bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from app.swarm.report import SwarmReport
from app.swarm.runner import RunOptions, run
from app.swarm.supernode import task_traffic

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12, "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*?)(?:/s)?\s*")
_DURATION = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def byte_size(text: str) -> int:
    """``64MiB``, ``8MB``, ``1.5GiB``, ``4096``; a rate may end in ``/s`` (``8MB/s``). Bytes, decimal or binary."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MiB, 8MB, 4096)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h`` in seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", text)
    if not match or match.group(2) not in _DURATION:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 10m, 2h)")
    return float(match.group(1)) * _DURATION[match.group(2)]


def node_list(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if not nodes:
        raise argparse.ArgumentTypeError("--node needs at least one host[:port]")
    return [n if ":" in n else f"{n}:8002" for n in nodes]  # dfget's default supernode port


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return value


def add_swarm_options(parser: argparse.ArgumentParser, *, peers: int) -> None:
    parser.add_argument("--node", type=node_list, default=None,
                        help="supernode list as dfget's --node gets it (comma-separated host[:port]; a VIP repeated "
                             "N times gives N-1 migrations to 1.0.5+)")
    parser.add_argument("--peers", type=int, default=peers, help=f"emulated dfget hosts (default {peers})")
    parser.add_argument("--versions", default="1.0.6", help="dfget versions, assigned round robin (0.4.1,1.0.6)")
    parser.add_argument("--down-rate", type=byte_size, help="per-peer download limit, bytes/s (dfget --locallimit)")
    parser.add_argument("--up-rate", type=byte_size, help="per-peer upload limit, bytes/s (the host's uplink)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every request a peer sends")
    parser.add_argument("--peer-ip", default="auto",
                        help="'distinct' (one 127/8 address per peer), 'auto' (distinct if every node is "
                             "loopback, else this host's IP) or one IP for every peer")
    parser.add_argument("--source-host", help="bind address of the generated file's server (default: loopback for "
                                              "a loopback supernode, else 0.0.0.0)")
    parser.add_argument("--source-advertise", help="host the supernode reaches the generated file at")
    parser.add_argument("--timeout", type=float, help="dfget --timeout per peer, seconds")
    parser.add_argument("--seed", type=int, default=1, help="random seed (content, churn, signs)")
    parser.add_argument("--api-token", default="", help="REST API token, to read the supernode's own byte split")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="df-swarm", description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_swarm_options(parser, peers=10)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", help="file every peer downloads (default: a generated file df-swarm serves)")
    source.add_argument("--size", type=byte_size, default=8 << 20, help="size of the generated file (default 8MiB)")
    parser.add_argument("--sha256", help="expected digest of --url's content (checked per peer)")
    parser.add_argument("--source-rate", type=byte_size, help="total egress of the generated file's server, bytes/s")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between two peers' starts")
    parser.add_argument("--churn", type=fraction, default=0.0, help="share of peers that leave mid-download")
    parser.add_argument("--native", action="store_true", help="every peer straight from the source (no supernode)")
    parser.add_argument("--instant-pieces", action="store_true", help="control plane only: no piece bytes move")
    parser.add_argument("--out-dir", type=Path, help="where peers write (default: a temporary directory)")
    parser.add_argument("--keep-files", action="store_true", help="keep the downloaded files")
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    parser.add_argument("--csv", type=Path, help="write one row per peer as CSV")
    parser.add_argument("--plot", type=Path, help="write a PNG of completion times (needs the [plot] extra)")
    return parser


def options_from(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        nodes=args.node or [], peers=args.peers, url=getattr(args, "url", None), size=getattr(args, "size", 8 << 20),
        sha256=getattr(args, "sha256", None), versions=[v.strip() for v in args.versions.split(",") if v.strip()],
        down_rate=args.down_rate, up_rate=args.up_rate, source_rate=getattr(args, "source_rate", None),
        latency=args.latency, stagger=getattr(args, "stagger", 0.0), churn=getattr(args, "churn", 0.0),
        native=getattr(args, "native", False), instant_pieces=getattr(args, "instant_pieces", False),
        peer_ip=args.peer_ip, source_host=args.source_host, source_advertise=args.source_advertise,
        timeout=args.timeout, seed=args.seed, out_dir=getattr(args, "out_dir", None),
        keep_files=getattr(args, "keep_files", False), progress=not args.quiet,
    )


async def run_and_read(options: RunOptions, api_token: str) -> SwarmReport:
    report = await run(options)
    task_ids = {p.task_id for p in report.peers if p.task_id}
    if options.nodes and not options.native and len(task_ids) == 1:
        report.supernode_traffic = await task_traffic(options.nodes[0], task_ids.pop(), api_token)
    return report


def write_outputs(report: SwarmReport, args: argparse.Namespace) -> None:
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if args.csv:
        args.csv.write_text(report.csv())
    if args.plot:
        from app.swarm.plot import plot_completion

        plot_completion(report, args.plot)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        from app.swarm.check import main as check_main

        return check_main(argv[1:])
    if argv and argv[0] == "capacity":
        from app.swarm.capacity import main as capacity_main

        return capacity_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv[1:] if argv and argv[0] == "run" else argv)
    if args.peers < 1:
        parser.error("--peers must be at least 1")
    if not args.native and not args.node:
        parser.error("--node is required (or --native for the no-supernode baseline)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'df-supernode[plot]'")
    report = asyncio.run(run_and_read(options_from(args), args.api_token))
    write_outputs(report, args)
    print(report.summary())
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
