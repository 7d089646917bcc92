"""How many CPUs this process may use: the default of ``DF_WORKERS``.

``os.cpu_count()`` is the host's, not the container's: a pod limited to 2 CPUs on a 64-core node would
start 64 workers that the CFS quota then throttles. The count is the smaller of the CPUs the scheduler
lets the process run on (affinity, cpusets) and the cgroup's CPU quota rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def quota_cpus(quota: str, period: str) -> int | None:
    """CPUs a CFS quota allows (rounded up), None for no quota ("max" in cgroup v2, -1 in v1)."""
    if quota.strip() in ("max", "-1"):
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return max(1, math.ceil(q / p))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpus() -> int | None:
    v2 = _read(_CGROUP_V2)
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return quota_cpus(quota, period or "100000")
    v1_quota, v1_period = (_read(path) for path in _CGROUP_V1)
    return quota_cpus(v1_quota, v1_period) if v1_quota is not None and v1_period is not None else None


def available_cpus() -> int:
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus()
    return max(1, min(allowed, quota) if quota is not None else allowed)
