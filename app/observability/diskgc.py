"""Series of the seed-cache disk GC (app.cdn.gc) beyond the two legacy ones (``gc_disks_total`` and
``last_gc_disks_timestamp_seconds`` in app.observability.legacy, names kept).

All are per replica: one replica at a time runs a GC pass (the one that took the Redis lock that
round), so a pass is counted on that replica only. Counters: sum over replicas. Gauges: the values of
this replica's own last pass; the current ones are those of the replica with the newest
``last_gc_disks_timestamp_seconds``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

_NS, _SN = "dragonfly", "supernode"
_PER_REPLICA = " Per replica: counted by the replica that ran the pass (sum over replicas)."
_LAST_PASS = (" Per replica: from this replica's last pass (the current value is that of the replica with the "
              "newest last_gc_disks_timestamp_seconds).")
REASONS = ("young", "full")
LEVELS = ("young", "full")

runs = Counter("disk_gc_runs_total", "Seed-cache disk GC passes." + _PER_REPLICA, namespace=_NS, subsystem=_SN)
evicted_files = Counter(
    "disk_gc_evicted_files_total",
    "Seed files the disk GC deleted, by reason: young (the longest-idle share, free space below the young "
    "threshold) or full (every idle seed, free space below the full threshold)." + _PER_REPLICA,
    ["reason"], namespace=_NS, subsystem=_SN,
)
evicted_bytes = Counter(
    "disk_gc_evicted_bytes_total", "Disk bytes the disk GC freed, by reason (young, full)." + _PER_REPLICA,
    ["reason"], namespace=_NS, subsystem=_SN,
)
skipped_pinned = Counter(
    "disk_gc_skipped_pinned_total",
    "Idle seed files a GC pass that had to free space kept because a preheat pinned them "
    "(DF_GC_PREHEAT_PIN_SECONDS); once per pass and file." + _PER_REPLICA,
    namespace=_NS, subsystem=_SN,
)
last_duration = Gauge(
    "disk_gc_last_duration_seconds", "How long the last disk GC pass took." + _LAST_PASS,
    namespace=_NS, subsystem=_SN, multiprocess_mode="mostrecent",
)
free_bytes = Gauge(
    "disk_gc_free_bytes", "Free bytes of the seed-cache volume after the last disk GC pass." + _LAST_PASS,
    namespace=_NS, subsystem=_SN, multiprocess_mode="mostrecent",
)
pinned_bytes = Gauge(
    "disk_gc_pinned_bytes", "Disk bytes of the pinned seed files without task state at the last disk GC pass: "
    "what the GC may not free yet." + _LAST_PASS, namespace=_NS, subsystem=_SN, multiprocess_mode="mostrecent",
)
threshold_bytes = Gauge(
    "disk_gc_threshold_bytes", "Free-space threshold in force, by level (young, full): the larger of "
    "DF_GC_*_FREE_BYTES and DF_GC_*_FREE_PERCENT of the volume." + _LAST_PASS,
    ["level"], namespace=_NS, subsystem=_SN, multiprocess_mode="mostrecent",
)

for _name in REASONS:  # every series exists from the start, at 0: rate() needs the first sample
    evicted_files.labels(_name)
    evicted_bytes.labels(_name)
for _name in LEVELS:
    threshold_bytes.labels(_name)
