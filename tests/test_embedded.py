"""`make run` with no Redis, Postgres or broker: the embedded supernode serves a real 8-peer swarm."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from app.swarm import Swarm
from tests.cluster import REPO, Proc, Replica, _wait_ready, free_port
from tests.sources import SourceServer

pytestmark = pytest.mark.slow


def start_make_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as handle:
        return subprocess.Popen(["make", "--no-print-directory", "run"], cwd=REPO, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def test_make_run_serves_an_eight_peer_swarm(tmp_path: Path) -> None:
    port, download_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
    env.update(DF_PORT=str(port), DF_DOWNLOAD_PORT=str(download_port), DF_HOME=str(tmp_path / "home"),
               DF_ADVERTISE_IP="127.0.0.1", DF_SOURCE_ALLOWLIST="127.0.0.0/8")
    log = tmp_path / "make-run.log"
    popen = start_make_run(env, log)
    supernode = Replica("make-run", popen, log, port=port, download_port=download_port)
    try:
        _wait_ready(supernode, f"http://127.0.0.1:{port}/_ping", timeout=120)
        assert "embedded mode" in supernode.tail(100)
        data = os.urandom(64 * 1024 * 1024)
        async with SourceServer() as source:
            source.add("blob.bin", data)
            async with Swarm(8, [supernode.node], source.url("blob.bin"), tmp_path / "out",
                             sleep_scale=0.25) as swarm:
                results = await swarm.run()
            full_gets = source.stats("blob.bin").full_gets
        digest = hashlib.sha256(data).hexdigest()
        for result in results:
            assert result.success and result.sha256 == digest, (result.error, supernode.tail())
            assert not result.back_sourced and not result.supernode_5xx
        assert full_gets == 1
        assert sum(r.pieces_from_peers for r in results) > 0
        assert (tmp_path / "home" / "repo" / "download").is_dir()
    finally:
        # make runs the server as a child: end the whole session so nothing outlives the test.
        os.killpg(popen.pid, 15)
        Proc.stop(supernode)
