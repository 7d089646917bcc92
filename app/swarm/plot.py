"""PNG charts of df-swarm results (matplotlib, the optional ``[plot]`` extra; imported only when asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.swarm.report import SwarmReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def plot_completion(report: SwarmReport, path: Path) -> None:
    """Each peer's completion time against its index, with the mean: who was slow, and how slow."""
    plt = _pyplot()
    judged = [p for p in report.peers if not p.churned]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter([p.index for p in judged], [p.duration for p in judged], s=12,
               c=["tab:blue" if p.ok else "tab:red" for p in judged])
    mean = report.completion()["mean"]
    ax.axhline(mean, color="tab:gray", linestyle="--", label=f"mean {mean:.2f} s")
    ax.set_xlabel("peer")
    ax.set_ylabel("completion time (s)")
    ax.set_title(f"df-swarm {report.mode}: {len(report.peers)} peers, {report.file_size / (1 << 20):.0f} MiB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_chart(rows: Sequence[tuple[int, float, float]], path: Path, title: str) -> None:
    """The seed's chart: mean completion time against the number of clients, native vs P2P."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ns = [n for n, _, _ in rows]
    ax.plot(ns, [native for _, native, _ in rows], marker="o", label="native (every client from the source)")
    ax.plot(ns, [p2p for _, _, p2p in rows], marker="s", label="P2P (df-swarm against the supernode)")
    ax.set_xlabel("clients")
    ax.set_ylabel("mean download time (s)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
