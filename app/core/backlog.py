"""The listen backlog of both ports: the host's ``net.core.somaxconn`` unless ``DF_LISTEN_BACKLOG`` says.

A herd of dfgets connects at once: 5,000 peers of 1,000 new tasks started together sent more SYNs than
uvicorn's default backlog of 2048 holds while the workers' loops were busy, and the kernel dropped the
rest. A dropped SYN is sent again after 1 s, then 2 s more, then 4 s more, so a registration lost two
of them and missed dfget's 5 s: every such peer migrated, and most went back to the source
(benchmarks/RESULTS.md, 2026-12-04: 55,545 listen-queue overflows in one series of runs). Go's
``net.Listen``, which the Go supernode served with, asks for ``somaxconn`` itself; so do we. The kernel
caps any backlog at ``somaxconn``, so raising that sysctl on the host is what raises the queue.
"""

from __future__ import annotations

import socket
from pathlib import Path

_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def host_somaxconn(path: Path = _SOMAXCONN) -> int:
    """The kernel's cap on a listen backlog (Python's compile-time ``SOMAXCONN`` where it cannot be read)."""
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN


def listen_backlog(setting: int, somaxconn: int | None = None) -> int:
    """``DF_LISTEN_BACKLOG`` when set (> 0), else the host's ``somaxconn``."""
    return setting if setting > 0 else (somaxconn if somaxconn is not None else host_somaxconn())
