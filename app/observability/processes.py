"""The ``process_*`` series of every process of a multi-worker replica (``DF_WORKERS`` > 1).

prometheus_client's default process collector describes the process answering the scrape. With several
workers that would be whichever one the kernel handed the connection to, so the multiprocess exposition
leaves it out (app.observability.exposition) and shows this instead: prometheus_client's own
``ProcessCollector`` read once for the supervisor and once for each of its live workers, each sample
labelled with the process's ``pid`` and ``process`` ("supervisor" or "worker"). The replica's total is
then a ``sum`` in PromQL, and a worker that was restarted is a new series, as a restarted pod is. The
series keep their standard names and meanings (RSS, user + system CPU of that process, its fds), so a
dashboard built for one process reads each of them as it reads one.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector


def children(pid: int, proc: str = "/proc") -> list[int]:
    """The live children of ``pid``, forked by any of its threads (each thread's ``children`` file lists
    its own); a kernel without those files (CONFIG_PROC_CHILDREN) is scanned instead. [] once it is gone."""
    found: list[int] = []
    try:
        for task in (Path(proc) / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        if not (Path(proc) / str(pid)).exists():
            return []
        return _scan_children(pid, proc)
    except OSError:
        return []
    return sorted(found)


def _scan_children(pid: int, proc: str) -> list[int]:
    found = []
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


class ReplicaProcesses(Collector):
    """``replica_pid``: the supervisor's pid when ``supervised``, else this process's (one worker with a
    metrics directory of its own, as tests run it: it is its replica's only process)."""

    def __init__(self, replica_pid: int, supervised: bool, proc: str = "/proc") -> None:
        self.replica_pid = replica_pid
        self.supervised = supervised
        self.proc = proc
        # One reader per live pid, kept across scrapes (each reads the boot time when it is made).
        self._readers: dict[int, ProcessCollector] = {}

    def _processes(self) -> list[tuple[int, str]]:
        if not self.supervised:
            return [(self.replica_pid, "worker")]
        return [(self.replica_pid, "supervisor")] + [(pid, "worker") for pid in children(self.replica_pid, self.proc)]

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        processes = self._processes()
        # registry=None: read on demand here, never registered anywhere by itself.
        self._readers = {pid: self._readers.get(pid) or ProcessCollector(pid=partial(int, pid), proc=self.proc,
                                                                          registry=None) for pid, _ in processes}
        for pid, kind in processes:
            for family in self._readers[pid].collect():  # nothing for a process that exited meanwhile
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid), "process": kind}
                    merged.add_sample(sample.name, labels, sample.value)
        return list(families.values())

