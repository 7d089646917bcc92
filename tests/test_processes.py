"""app.observability.processes: the process_* series of each process of a replica, read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.observability.processes import ReplicaProcesses, children


def scrape(collector: ReplicaProcesses) -> dict[tuple[str, str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (s.name, s.labels["pid"], s.labels["process"]): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def test_each_process_of_a_replica_is_its_own_labelled_series() -> None:
    me = str(os.getpid())
    hold = "import time; held = b'x' * (96 << 20); print('ok', flush=True); time.sleep(60)"  # every page written
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"  # its 96 MiB are touched
        assert child.pid in children(os.getpid())
        sampled = scrape(ReplicaProcesses(os.getpid(), supervised=True))
        ours = {k: v for k, v in sampled.items() if k[1] in (me, str(child.pid))}
        names = {"process_resident_memory_bytes", "process_virtual_memory_bytes", "process_cpu_seconds_total",
                 "process_start_time_seconds", "process_open_fds", "process_max_fds"}
        assert {(name, me, "supervisor") for name in names} <= set(ours)
        assert ours[("process_open_fds", me, "supervisor")] >= 3
        assert ours[("process_cpu_seconds_total", me, "supervisor")] > 0
        # The child's figures are its own, not ours: it started later and holds its own 96 MiB.
        worker = str(child.pid)
        assert {(name, worker, "worker") for name in names} <= set(ours)
        assert ours[("process_resident_memory_bytes", worker, "worker")] > 96 * 2**20
        assert ours[("process_start_time_seconds", worker, "worker")] >= ours[("process_start_time_seconds", me,
                                                                                "supervisor")]
    finally:
        child.kill()
        child.wait()
    # A process that has exited (and been reaped) is no series at all.
    after = scrape(ReplicaProcesses(os.getpid(), supervised=True))
    assert not [k for k in after if k[1] == str(child.pid)]


def test_an_unsupervised_process_is_its_own_only_worker() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampled = scrape(ReplicaProcesses(os.getpid(), supervised=False))
    finally:
        child.kill()
        child.wait()
    assert {k[1:] for k in sampled} == {(str(os.getpid()), "worker")}
    assert sampled[("process_resident_memory_bytes", str(os.getpid()), "worker")] > 10 * 2**20


def test_children_without_the_kernels_children_files_are_found_by_their_parent_pid(tmp_path: Path) -> None:
    """A kernel built without CONFIG_PROC_CHILDREN: every process's stat is read for its parent."""
    (tmp_path / "100" / "task" / "100").mkdir(parents=True)
    for pid, parent in ((200, 100), (300, 5), (201, 100)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (py thon) S {parent} 1 1 0 -1")
    assert children(100, str(tmp_path)) == [200, 201]
    assert children(999, str(tmp_path)) == []  # gone
