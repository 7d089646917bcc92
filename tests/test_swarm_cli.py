"""df-swarm (app/swarm/cli.py, runner.py, report.py, check.py) against real supernodes on loopback.

Two embedded supernodes run in this module's event loop: one that works, one whose source policy
refuses loopback sources (DF_SOURCE_DENYLIST). The tool itself runs as the user runs it
(``python -m app.swarm``, a subprocess) for the report and ``check`` tests, and in-process where the test
needs the origin's own records (native reads, bandwidth).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from app.core.config import Settings
from app.protocol.pieces import FRAME_OVERHEAD
from app.swarm.runner import RunOptions, SwarmRun
from app.swarm.uploader import Uploader
from tests.cluster import REPO, TEST_TOKEN
from tests.live import Live, live_supernode

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
MB = 1_000_000


def embedded(home: Path, **overrides: object) -> Settings:
    return Settings(redis_url="", home=home / "home", seed_dir=home / "seed", advertise_ip="127.0.0.1",
                    api_tokens=f"tests:{TEST_TOKEN}", **overrides)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def working(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    async with live_supernode(embedded(tmp_path_factory.mktemp("sn-ok"))) as sn:
        yield sn


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def refusing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    # Embedded mode allows loopback sources by default; the denylist takes that back (app/cdn/policy.py).
    async with live_supernode(embedded(tmp_path_factory.mktemp("sn-deny"), source_denylist="127.0.0.0/8")) as sn:
        yield sn


async def df_swarm(*args: str) -> tuple[int, str]:
    """``python -m app.swarm ARGS`` while this loop keeps serving the supernodes; (exit status, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.swarm", *args, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={k: v for k, v in os.environ.items() if not k.startswith("DF_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_the_report_byte_split_equals_the_supernodes_rest_api(working: Live, tmp_path: Path) -> None:
    rc, out = await df_swarm(
        "--node", working.node, "--peers", "5", "--size", "13MiB", "--versions", "0.4.1,1.0.6",
        "--api-token", TEST_TOKEN, "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
        "--quiet",
    )
    assert rc == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["success"] and report["counts"]["sha256_ok"] == 5, out
    (tid,) = {p["task_id"] for p in report["peers"]}
    async with httpx.AsyncClient() as client:
        shown = (await client.get(f"{working.api}/api/v1/tasks/{tid}",
                                  headers={"Authorization": f"Bearer {TEST_TOKEN}"})).json()["traffic"]
    split = report["bytes_by_source"]
    assert {k: split[k] for k in ("peer", "seed", "source")} == shown == report["supernode_traffic"]
    # 13 MiB in 4 MiB pieces: 4 pieces, 5 framing bytes each, to each of 5 peers, nobody back to source.
    assert split["peer"] + split["seed"] == 5 * (13 * 1024 * 1024 + 4 * FRAME_OVERHEAD)
    assert split["peer"] > 0 and split["source"] == 0 and report["counts"]["back_sourced"] == 0
    assert report["source"]["full_gets"] == 1  # the seeder's read; the peers never touched the origin
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3, 4]
    assert sum(int(r["bytes_peer"]) for r in rows) == split["peer"]
    assert "sha256 ok" in out and "supernode  says" in out


async def test_native_reads_the_source_once_per_peer() -> None:
    swarm = SwarmRun(RunOptions(nodes=[], peers=3, size=2 << 20, native=True, progress=False))
    report = await swarm.run()
    assert report.success and report.counts()["sha256_ok"] == 3
    assert report.source_stats is not None and report.source_stats["full_gets"] == 3
    assert report.source_egress == 3 * (2 << 20)
    assert swarm.source is not None
    # Each peer talks from its own address: the origin saw each of them exactly once.
    assert sorted(s.client for s in swarm.source.served()) == sorted(p.ip for p in report.peers)
    assert len({p.ip for p in report.peers}) == 3
    assert all(p.back_sourced and p.bytes_source == 2 << 20 for p in report.peers)


async def test_download_and_source_limits_hold_within_ten_percent() -> None:
    # Per-peer download limit, measured where the bytes leave the origin (its second-half write times). Loopback
    # socket buffers swallow several MB at once, so the body must be well past that for the second half to be
    # paced by the reader: 32 MiB at 16 MB/s (about 2 s).
    swarm = SwarmRun(RunOptions(nodes=[], peers=2, size=32 << 20, native=True, down_rate=16 * MB, progress=False))
    assert (await swarm.run()).success
    assert swarm.source is not None
    rates = [s.steady_rate for s in swarm.source.served()]
    assert len(rates) == 2 and all(abs(rate / (16 * MB) - 1) <= 0.10 for rate in rates), rates
    # The origin's total egress limit, measured by the unlimited clients: what they got over the time.
    swarm = SwarmRun(RunOptions(nodes=[], peers=3, size=3 << 20, native=True, source_rate=6 * MB, progress=False))
    report = await swarm.run()
    assert report.success
    assert swarm.source is not None
    served = swarm.source.served()
    span = max(s.ended for s in served) - min(s.started for s in served)
    assert abs(3 * (3 << 20) / span / (6 * MB) - 1) <= 0.10, span


async def test_the_upload_limit_holds_within_ten_percent(tmp_path: Path) -> None:
    """A peer's ``--up-rate`` as its downloaders see it: four pieces fetched at once from its uploader."""
    piece = 1 << 20
    data = os.urandom(4 * piece)
    path = tmp_path / "task.service"
    path.write_bytes(data)
    async with Uploader("127.0.0.1", rate_limit=2 * MB) as uploader, httpx.AsyncClient() as client:
        uploader.add_task("t", path)
        framed = piece + FRAME_OVERHEAD

        async def fetch(num: int) -> int:
            start = num * framed
            headers = {"Range": f"bytes={start}-{start + framed - 1}", "pieceNum": str(num), "pieceSize": str(framed)}
            response = await client.get(f"{uploader.base_url}/peer/file/t", headers=headers)
            assert response.status_code == 206
            assert response.content[4:-1] == data[num * piece : (num + 1) * piece]
            return len(response.content)

        started = time.monotonic()
        got = sum(await asyncio.gather(*(fetch(n) for n in range(4))))
        rate = got / (time.monotonic() - started)
    assert abs(rate / (2 * MB) - 1) <= 0.10, rate


async def test_check_tells_a_working_cluster_from_a_refused_source(working: Live, refusing: Live) -> None:
    rc, out = await df_swarm("check", "--node", working.node, "--size", "13MiB", "--quiet")
    assert rc == 0 and "P2P WORKS" in out, out
    assert "[NO]" not in out
    rc, out = await df_swarm("check", "--node", refusing.node, "--size", "5MiB", "--quiet")
    assert rc == 1 and "P2P DOES NOT WORK" in out, out
    assert "refuses the source by policy" in out and "DF_SOURCE_DENYLIST" in out, out
    assert "[NO] no peer went back to the source" in out  # dfget 1.0.6 goes to the origin after a 607
