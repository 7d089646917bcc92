"""Per-replica gauges of this process's own condition: readiness (what /readyz answers) and the audit
events it holds in memory through a Redis outage (``app.core.replay``), waiting to be written.

Readiness is read at scrape time from the object itself (no I/O), so it is exact when scraped; with
DF_WORKERS > 1 it is that of the worker that answered, which judges Redis and the drain as its
siblings do. The newest app of the process is the one shown (tests build several apps in one
process; a server builds one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.observability import exposition

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


# Set by the replay buffer itself (app.core.replay ``on_size``): with DF_WORKERS > 1 each worker holds its
# own buffer, and a scrape sums those of the live workers.
replay_buffered = Gauge(
    "replay_buffered", "Writes (reports, audit events) this replica holds in memory until Redis is back. Per replica.",
    namespace="dragonfly", subsystem="supernode", multiprocess_mode="livesum",
)

collector = LocalCollector()
exposition.register(collector)


def bind(state: Any) -> None:
    collector.state = state
