"""One replica on every core: ``DF_WORKERS`` processes sharing the API and piece ports.

The supervisor binds both listening sockets once and forks the workers, which inherit them, so the
kernel hands each new connection to whichever worker accepts first and a worker that dies loses only
the connections it had accepted (the listen queue is the socket's, not the worker's). Each worker is
a whole supernode process (app.main.serve) on its own event loop; the state they share is in Redis,
as between replicas. Prometheus counters of all workers are summed through prometheus_client's
multiprocess mode (app.observability.exposition).

Signals: SIGTERM and SIGINT are passed to every worker once per signal received (a first SIGTERM
starts each worker's drain, a second one skips it); the supervisor exits when the last worker has,
with the worst exit code. Workers run in their own process group (a terminal's Ctrl-C reaches them
once, through here) and get SIGTERM if the supervisor itself dies. A new worker holds both signals
back until its server handles them, so a stop right after a worker restarted drains it too. A worker
that dies unexpectedly is started again; one that keeps dying within seconds of its start means a
broken host or setup, and the supervisor stops the replica with exit code 1 rather than loop.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from app.core.process import ProcessRole

log = logging.getLogger("app.server")

_PR_SET_PDEATHSIG = 1
CRASH_WINDOW_SECONDS = 10.0  # a worker that dies this soon after its start counts towards a crash loop
CRASH_LIMIT = 5  # that many such deaths in a row of one worker stop the replica
RESTART_DELAY_SECONDS = 0.5
WORKER_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})  # blocked in a new worker until it handles them


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket for ``host:port`` (IPv4 or IPv6, as the address is), shared by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 clients too
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


@dataclass
class _Worker:
    index: int
    pid: int
    started: float
    quick_deaths: int = 0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: an orphaned worker lives until it is stopped
        pass


class Supervisor:
    def __init__(self, count: int, run_worker: Callable[[ProcessRole], int], on_exit: Callable[[int], None]) -> None:
        self.count = count
        self.run_worker = run_worker  # runs in the forked child, returns its exit code
        self.on_exit = on_exit  # called with the pid of every worker that exited (metrics cleanup)
        self.pid = os.getpid()
        self.workers: dict[int, _Worker] = {}  # by pid
        self.stopping = False
        self.code = 0

    def _spawn(self, index: int, quick_deaths: int = 0) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.setpgid(0, 0)
                _die_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Held back until the worker's server has its handlers (app.main._DrainingServer), so a
                # SIGTERM in the first tenth of a second (a stop right after a restart) drains the
                # worker instead of killing it, and the replica still exits 0.
                signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
                code = self.run_worker(ProcessRole(index, self.count, self.pid))
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = _Worker(index, pid, time.monotonic(), quick_deaths)
        log.info("worker %d/%d started (pid %d)", index + 1, self.count, pid)

    def _forward(self, sig: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for index in range(self.count):
            self._spawn(index)
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                self.code = max(self.code, code if code >= 0 else 128 - code)
                continue
            self._restart(worker, code)
        return self.code

    def _restart(self, worker: _Worker, code: int) -> None:
        quick = time.monotonic() - worker.started < CRASH_WINDOW_SECONDS
        deaths = worker.quick_deaths + 1 if quick else 0
        log.error("worker %d (pid %d) exited with %d", worker.index, worker.pid, code)
        if deaths >= CRASH_LIMIT:
            log.critical("worker %d died %d times within %.0f s of its start: stopping the replica",
                         worker.index, deaths, CRASH_WINDOW_SECONDS)
            self.code = 1
            self._forward(signal.SIGTERM, None)
            return
        time.sleep(RESTART_DELAY_SECONDS * (1 + deaths))
        if not self.stopping:
            log.info("starting worker %d again", worker.index)
            self._spawn(worker.index, deaths)
