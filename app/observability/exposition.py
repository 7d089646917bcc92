"""The body of ``GET /metrics`` on both ports, one process or many.

A replica with ``DF_WORKERS`` > 1 runs prometheus_client's multiprocess mode: the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before anything imports prometheus_client, each
worker's counters, histograms and gauges live in files there, and a scrape answered by any worker
merges all of them (counters and histograms summed; each gauge by its ``multiprocess_mode``).

Collectors computed at scrape time from the process's own objects (``register``: the cluster-wide
snapshot, readiness) are not in those files; they are added to every exposition. The default
registry's process and runtime collectors describe one process only, so in multiprocess mode they are
left out rather than shown for whichever worker answered; the ``process_*`` series of every process of
the replica, labelled by pid, take their place (app.observability.processes).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.registry import REGISTRY, Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_extra: list[Collector] = []
_processes: list[Collector] = []  # the replica's process_* series, multiprocess exposition only


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def register(collector: Collector) -> None:
    """A scrape-time collector: in the default registry, and in every multiprocess exposition."""
    REGISTRY.register(collector)
    _extra.append(collector)


def show_replica_processes(collector: Collector) -> None:
    """The process_* collector of the multiprocess exposition. One per process: a worker forked from a
    supervisor that already set one (it validates the setup with create_app) replaces it."""
    _processes[:] = [collector]


def exposition() -> tuple[bytes, str]:
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    for collector in _extra + _processes:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (the supervisor calls it); its counters stay in the sums."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
