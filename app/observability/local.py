"""Per-replica gauges of this process's own condition: readiness (what /readyz answers) and the audit
events it holds in memory through a Redis outage (``app.core.replay``), waiting to be written.

Read at scrape time from the objects themselves (no I/O), so they are exact when scraped. The newest
app of the process is the one shown (tests build several apps in one process; a server builds one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

_NS = "dragonfly_supernode_"


class LocalCollector(Collector):
    def __init__(self) -> None:
        self.state: Any = None  # the app's ``app.state``: readiness now, the replay buffer once started

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if state is None:
            return
        readiness = getattr(state, "readiness", None)
        if readiness is not None:
            yield GaugeMetricFamily(_NS + "ready", "1 when this replica answers /readyz with 200 (Redis "
                                    "reachable, not draining), else 0. Per replica.", value=int(readiness.ready))
            yield GaugeMetricFamily(_NS + "draining", "1 while this replica drains before it stops. Per replica.",
                                    value=int(readiness.draining))
        replay = getattr(state, "replay", None)
        if replay is not None:
            yield GaugeMetricFamily(
                _NS + "replay_buffered", "Writes (reports, audit events) this replica holds in memory until Redis "
                "is back. Per replica.", value=len(replay),
            )


collector = LocalCollector()
REGISTRY.register(collector)


def bind(state: Any) -> None:
    collector.state = state
