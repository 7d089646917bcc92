"""CPU priority of a process (``DF_SEED_WORKER_NICE``).

Raising one's own niceness needs no privilege; lowering it does, so a process already nicer than asked
(an operator's ``nice -n 19``) is left as it is.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("app.core.priority")


def lower_priority(nice: int) -> int:
    """Make this process at least ``nice`` (0 leaves it alone); return its niceness afterwards."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        log.info("CPU niceness %d -> %d (DF_SEED_WORKER_NICE): the replicas on this host come first", current, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)
