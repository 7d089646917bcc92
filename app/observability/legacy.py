"""The legacy supernode's per-replica counters and histograms, with its exact names, labels and buckets
(METRICS-AND-HELM.md §5). Module-level: a metric is registered once per process, however many apps a
process builds (tests build several).

Every one counts what *this replica* saw, so Prometheus sums them over replicas. The ``peer`` label
(a dfget's IP) is kept in every series for queries written against the Go supernode, but its value is
empty unless ``DF_METRICS_PEER_LABEL`` is on: one series per dfget host is unbounded cardinality.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_NS = "dragonfly"
_SN = "supernode"
_DFGET = "dfget"

# dfget's reports (POST /task/metrics).
dfget_download_duration = Histogram(
    "download_duration_seconds", "Duration of the downloads dfget reported to this replica.",
    ["callsystem", "peer"], namespace=_NS, subsystem=_DFGET, buckets=(10, 30, 60, 120, 300, 600),
)
dfget_download_size = Counter(
    "download_size_bytes_total", "Bytes of the successful downloads dfget reported to this replica.",
    ["callsystem", "peer"], namespace=_NS, subsystem=_DFGET,
)
dfget_download = Counter(
    "download_total", "Downloads dfget reported to this replica.", ["callsystem", "peer"],
    namespace=_NS, subsystem=_DFGET,
)
dfget_download_failed = Counter(
    "download_failed_total", "Failed downloads dfget reported to this replica, by back-source reason.",
    ["callsystem", "peer", "reason"], namespace=_NS, subsystem=_DFGET,
)

# Registrations (POST /peer/registry).
tasks_registered = Counter(
    "tasks_registered_total", "Task registrations this replica received.", namespace=_NS, subsystem=_SN,
)
dfgettasks_registered = Counter(
    "dfgettasks_registered_total", "dfget task registrations this replica received.", ["callsystem"],
    namespace=_NS, subsystem=_SN,
)
dfgettasks_failed = Counter(
    "dfgettasks_failed_total", "dfget task registrations this replica refused or could not complete.",
    ["callsystem"], namespace=_NS, subsystem=_SN,
)

# Pieces and scheduling (the dfget hot path).
pieces_downloaded_bytes = Counter(
    "pieces_downloaded_size_bytes_total",
    "Framed bytes of the pieces dfget reported to this replica as fetched from the seed cache.",
    namespace=_NS, subsystem=_SN,
)
schedule_duration = Histogram(
    "schedule_duration_milliseconds",
    "Time this replica took to answer a piece pull (scheduling is the pull's work), in milliseconds.",
    ["peer"], namespace=_NS, subsystem=_SN, buckets=tuple(0.02 * 2**i for i in range(6)),
)

# The seeding (legacy CDN) counters are cluster-wide: app/observability/seedstats.py.
# Tasks and peer records that outlive their TTL are dropped by Redis itself, which no process sees: these
# count the removals a replica does (DELETE /api/v1/tasks/{id}, DELETE /api/v1/peers/{id}).
gc_peers = Counter("gc_peers_total", "Peer records this replica removed (API deletes; TTL expiry is Redis's).",
                   namespace=_NS, subsystem=_SN)
gc_tasks = Counter("gc_tasks_total", "Tasks this replica removed (API deletes; TTL expiry is Redis's).",
                   namespace=_NS, subsystem=_SN)
gc_disks = Counter("gc_disks_total", "Seed files this replica's disk GC deleted.", namespace=_NS, subsystem=_SN)
last_gc_disks = Gauge(
    "last_gc_disks_timestamp_seconds", "When this replica's disk GC last ran (Unix seconds).",
    namespace=_NS, subsystem=_SN, multiprocess_mode="mostrecent",
)
