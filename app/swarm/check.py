"""``df-swarm check --node VIP``: does P2P work on this deployment? One screen, and why not.

A handful of peers download a generated file this tool serves itself. P2P works when every peer got
the right bytes, peers served pieces to each other, the source was read once (by the supernode's
seeder) and no peer went back to the source. Otherwise the verdict names the first cause it can see
in what the peers and the source observed (pure: :func:`diagnose` takes the report).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.swarm.ratelimit import DFGET_1_0_DEFAULT_RATE
from app.swarm.report import SwarmReport
from app.swarm.runner import RunOptions, run

_POLICY_MARK = " refused: "  # the supernode's source-policy answer (app.cdn.policy), carried in a 607's msg


@dataclass
class Verdict:
    works: bool
    checks: list[tuple[bool, str]] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    def screen(self, report: SwarmReport) -> str:
        lines = [f"df-swarm check: {'P2P WORKS' if self.works else 'P2P DOES NOT WORK'}"]
        lines += [f"  [{'ok' if ok else 'NO'}] {text}" for ok, text in self.checks]
        lines += [f"  why: {cause}" for cause in self.causes]
        lines += ["", report.summary()]
        return "\n".join(lines)


def _errors(report: SwarmReport) -> list[str]:
    return [p.error for p in report.judged if p.error]


def diagnose(report: SwarmReport) -> Verdict:
    counts, split = report.counts(), report.bytes_by_source()
    stats = report.source_stats or {}
    full_gets = int(stats.get("full_gets", 0))
    verdict = Verdict(works=False)
    verdict.checks = [
        (report.success, f"every peer got the right bytes ({counts['sha256_ok']}/{len(report.judged)} sha256 ok)"),
        (split["peer"] > 0 and report.pieces_uploaded > 0,
         f"peers served pieces to each other ({report.pieces_uploaded} pieces, {split['peer']} bytes)"),
        (full_gets == 1, f"the source was read once (full reads: {full_gets})"),
        (counts["back_sourced"] == 0, f"no peer went back to the source ({counts['back_sourced']} did)"),
    ]
    verdict.works = all(ok for ok, _ in verdict.checks)
    if not verdict.works:
        verdict.causes = _causes(report, full_gets)
    return verdict


def _causes(report: SwarmReport, full_gets: int) -> list[str]:
    errors = _errors(report)
    policy = next((e for e in errors if _POLICY_MARK in e), None)
    if policy is not None:
        return [f"the supernode refuses the source by policy: {policy.split(': ', 1)[-1]} "
                "(DF_SOURCE_ALLOWLIST / DF_SOURCE_DENYLIST on the replicas; see app/cdn/policy.py)"]
    causes: list[str] = []
    registered = sum(p.registrations for p in report.judged)
    cp = report.control
    if registered == 0 and cp.requests and sum(cp.transport_errors.values()) == cp.requests:
        causes.append(f"no supernode answered: {errors[0] if errors else 'transport errors only'} "
                      "(is --node the VIP's host:port?)")
    elif registered == 0:
        causes.append(f"registration failed: {errors[0] if errors else 'no answer'}")
    if registered and int((report.source_stats or {}).get("requests", 0)) == 0:
        causes.append("the supernode never fetched the source: it cannot reach "
                      f"{report.settings.get('url')} (use --source-advertise with an address it can reach)")
    unreachable = sum(p.peer_fetch_failures for p in report.judged)
    if unreachable:
        causes.append(f"{unreachable} piece fetches from other peers failed: peers cannot reach each other's "
                      "uploaders (firewall between hosts, or --peer-ip not reachable)")
    elif registered and report.bytes_by_source()["peer"] == 0 and report.success:
        causes.append("every piece came from the seed cache: peers were never sent to each other "
                      "(try more --peers or a bigger --size; with too few pieces the seed answers all)")
    if full_gets > 1:
        causes.append(f"the source was read {full_gets} times in full: peers or replicas fetched it again")
    back = [p for p in report.judged if p.back_sourced]
    if back:
        causes.append(f"{len(back)} peers went back to the source; first: {back[0].error or 'no error given'}")
    bad = [p for p in report.judged if p.success and p.sha256_ok is False]
    if bad:
        causes.append(f"{len(bad)} peers got wrong bytes (sha256 differs)")
    return causes or [errors[0] if errors else "see the report below"]


def build_parser() -> argparse.ArgumentParser:
    from app.swarm.cli import add_swarm_options, byte_size

    parser = argparse.ArgumentParser(prog="df-swarm check", description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_swarm_options(parser, peers=4)
    parser.add_argument("--size", type=byte_size, default=16 << 20, help="generated file size (default 16MiB)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.swarm.cli import options_from

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.node:
        parser.error("--node is required")
    if args.peers < 2:
        parser.error("--peers must be at least 2: P2P needs someone to share with")
    options: RunOptions = options_from(args)
    if options.down_rate is None:
        # What a real dfget 1.0.x reads at unless told otherwise: with unlimited emulated readers on a fast
        # network the seed cache could answer every piece before any peer had one to share.
        options.down_rate = DFGET_1_0_DEFAULT_RATE
    report = asyncio.run(run(options))
    verdict = diagnose(report)
    print(verdict.screen(report))
    return 0 if verdict.works else 1


if __name__ == "__main__":
    sys.exit(main())
