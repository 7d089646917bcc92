"""Which process of a replica this is (``DF_WORKERS``).

A replica runs one or more worker processes on the same two ports (app.server.supervisor). They all
answer requests; the first one (``primary``) also does the replica's own background work, which must
happen once per replica, not once per process: the heartbeat (one replica, one id), the seed-cache
disk GC, the index upkeep and the cluster-wide gauges. (Audit events are consumed by every worker,
each a consumer of its own name in the one group.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProcessRole:
    index: int = 0
    count: int = 1
    replica_pid: int = field(default_factory=os.getpid)  # the supervisor's pid, part of the replica id

    @property
    def primary(self) -> bool:
        return self.index == 0
