"""The dashboard in a real browser (Debian's chromium driven by Playwright for Python) against a live
two-replica cluster (replica processes, Postgres audit log, a docker-registry) with an emulated swarm.

One browser launch and one cluster for the module; the tests run in file order and share the page,
as an operator's session would. Screenshots go to $DF_TEST_ARTIFACTS (or the module's tmp dir);
DF_UPDATE_DOCS_SCREENSHOT=1 also writes the overview to docs/dashboard.png for the README.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from app.protocol.taskid import task_id
from app.swarm import Swarm
from app.swarm.result import DfgetResult
from tests.cluster import TEST_TOKEN, Cluster, Replica
from tests.conftest import REDIS_BASE, STATE_DB
from tests.postgres import fresh_database
from tests.registry import REGISTRY_BIN, Pusher, Registry, start_registry
from tests.sources import SourceServer
from tests.test_bridge import registration

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing: run tests/services/chromium.sh as root"),
    pytest.mark.skipif(REGISTRY_BIN is None, reason="docker-registry missing: run tests/services/registry.sh"),
    pytest.mark.asyncio(loop_scope="module"),
]
playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
UI_WAIT_MS = 20_000  # the page polls every 2 s; a busy 2-core machine may take a few rounds
PEERS = 6


@dataclass
class Stack:
    cluster: Cluster
    private: Replica  # DF_PUBLIC_READ_API off: the page asks for a token first
    public: Replica  # DF_PUBLIC_READ_API on
    source: SourceServer
    registry: Registry
    artifacts: Path
    data: bytes
    url: str
    results: list[DfgetResult] | None = None
    swarm: asyncio.Task[list[DfgetResult]] | None = None

    @property
    def tid(self) -> str:
        return task_id(self.url)

    def dashboard(self, replica: Replica, view: str = "overview") -> str:
        return f"http://{replica.node}/dashboard/#/{view}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("dashboard")
    artifacts = Path(os.environ.get("DF_TEST_ARTIFACTS") or workdir / "screenshots") / "dashboard"
    artifacts.mkdir(parents=True, exist_ok=True)
    redis_url = f"{REDIS_BASE}/{STATE_DB}"
    admin = aioredis.Redis.from_url(redis_url)
    await admin.flushdb()
    async for database_url in fresh_database():
        cluster = Cluster(workdir, redis_url, None, extra_env={"DF_DATABASE_URL": database_url})
        try:
            private = cluster.start_replica()
            cluster.extra_env["DF_PUBLIC_READ_API"] = "true"
            public = cluster.start_replica()
            with start_registry(workdir / "registry") as registry:
                async with SourceServer() as source:
                    data = os.urandom(21 * 1024 * 1024 + 5)  # 6 pieces
                    source.add("big.bin", data, pace=0.002)  # seeding takes a moment: progress is seen moving
                    yield Stack(cluster, private, public, source, registry, artifacts, data, source.url("big.bin"))
        finally:
            cluster.stop()
            await admin.flushdb()
            await admin.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(stack: Stack) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.errors = errors
        yield tab
        await browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def shot(page: Any, stack: Stack, name: str) -> Path:
    path = stack.artifacts / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def rest(stack: Stack, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{stack.private.node}", headers=AUTH, timeout=10) as http:
        return await http.request(kwargs.pop("method", "GET"), path, **kwargs)


async def test_a_wrong_token_shows_the_api_error(page: Any, stack: Stack) -> None:
    await page.goto(stack.dashboard(stack.private))
    await expect(page.locator("#login")).to_be_visible(timeout=UI_WAIT_MS)
    await page.fill("#token", "not-the-token")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_have_text("403: invalid token", timeout=UI_WAIT_MS)
    await expect(page.locator("#error")).to_contain_text("403: invalid token")
    await shot(page, stack, "wrong-token")


async def test_log_in_and_the_task_reaches_100_percent(page: Any, stack: Stack) -> None:
    await page.fill("#token", TEST_TOKEN)
    await page.click("#login-submit")
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#status-line")).to_contain_text("updated", timeout=UI_WAIT_MS)
    assert await page.evaluate("sessionStorage.getItem('df-dashboard-token')") == TEST_TOKEN

    nodes = [stack.private.node, stack.public.node]
    out = stack.cluster.workdir / "swarm"
    swarm = Swarm(PEERS, nodes, stack.url, out, versions=["1.0.6", "0.4.1"], sleep_scale=0.25)
    await swarm.start()

    async def run() -> list[DfgetResult]:
        try:
            return await swarm.run()
        finally:
            await swarm.stop()

    stack.swarm = asyncio.create_task(run())
    await page.goto(stack.dashboard(stack.private, "tasks"))
    row = page.locator(f'tr[data-task="{stack.tid}"]')
    await expect(row).to_be_visible(timeout=UI_WAIT_MS)
    await shot(page, stack, "tasks-running")
    await expect(row.locator(".badge")).to_have_text("✔SUCCESS", timeout=60_000)
    await expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    stack.results = await asyncio.wait_for(stack.swarm, 120)
    assert all(r.success for r in stack.results), [r.error for r in stack.results]
    await expect(row.locator("td").nth(3)).to_have_text(f"0 / {PEERS}", timeout=UI_WAIT_MS)
    await shot(page, stack, "tasks-done")


async def test_the_byte_split_is_the_api_s_and_the_piece_map_fills(page: Any, stack: Stack) -> None:
    await page.goto(stack.dashboard(stack.private, f"task/{stack.tid}"))
    cells = page.locator("#piece-map .cell")
    await expect(cells).to_have_count(6, timeout=UI_WAIT_MS)
    # Every client has an uploader and reported every piece: each cell counts all of them.
    await expect(page.locator(f'#piece-map .cell[data-holders="{PEERS}"]')).to_have_count(6, timeout=UI_WAIT_MS)
    await expect(page.locator('#piece-map .cell[data-seeded="true"]')).to_have_count(6)
    traffic = (await rest(stack, f"/api/v1/tasks/{stack.tid}")).json()["traffic"]
    assert traffic["peer"] > 0 and traffic["seed"] > 0
    split = page.locator("#task-split .split-cell")
    await expect(split).to_have_attribute("data-peer", str(traffic["peer"]), timeout=UI_WAIT_MS)
    assert await split.get_attribute("data-seed") == str(traffic["seed"])
    assert await split.get_attribute("data-source") == str(traffic["source"])
    # The emulator's real bytes: every client got the whole file, framed, from peers or the seed cache.
    assert traffic["peer"] + traffic["seed"] == PEERS * (len(stack.data) + 5 * 6)
    await expect(page.locator("tbody tr", has_text="task.created")).to_have_count(1, timeout=UI_WAIT_MS)
    await shot(page, stack, "task")


async def test_the_overview_shows_the_cluster(page: Any, stack: Stack) -> None:
    await page.goto(stack.dashboard(stack.private))
    overview = (await rest(stack, "/api/v1/overview", params={"minutes": 15})).json()
    ratio = overview["traffic"]["p2pRatio"]
    await expect(page.locator("#p2p-ratio .big")).to_have_text(f"{ratio * 100:.1f} %", timeout=UI_WAIT_MS)
    await expect(page.locator("main table").first.locator("tbody tr")).to_have_count(2)
    path = await shot(page, stack, "overview")
    if os.environ.get("DF_UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(path, Path(__file__).parent.parent / "docs" / "dashboard.png")


async def test_a_limit_changed_on_the_page_reaches_the_next_piece_tasks(page: Any, stack: Stack) -> None:
    await page.goto(stack.dashboard(stack.private, "limits"))
    await expect(page.locator("#now-downLinkKiB")).to_have_text("0", timeout=UI_WAIT_MS)
    await page.fill("#limit-downLinkKiB", "4096")
    await page.click("#limits-form button[type=submit]")
    await expect(page.locator("#confirm-body")).to_contain_text("downLinkKiB: 0 → 4096")
    await page.click("#confirm-ok")
    await expect(page.locator("#now-downLinkKiB")).to_have_text("4096", timeout=UI_WAIT_MS)
    await shot(page, stack, "limits")
    # A new client of the task on the other replica: its piece tasks carry the new downLink.
    cid = "127.0.0.9-77-1.000"
    async with httpx.AsyncClient(base_url=f"http://{stack.public.node}", timeout=10) as dfget:
        assert (await dfget.post("/peer/registry", json=registration(stack.url, cid))).json()["code"] == 200
        deadline = time.monotonic() + 5
        while True:
            answer = (await dfget.get(f"/peer/task?srcCid={cid}&dstCid=&range=&result=502&status=700"
                                      f"&taskId={stack.tid}")).json()
            if answer["code"] == 601 and {t["downLink"] for t in answer["data"]} == {4096}:
                break
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.1)
    assert (await rest(stack, "/api/v1/limits", method="PUT", json={"downLinkKiB": None})).status_code == 200


async def test_a_preheat_started_from_the_form_succeeds(page: Any, stack: Stack) -> None:
    async with Pusher(stack.registry.url) as push:
        image = await push.image("library/dash", "v1", [os.urandom(300_000), os.urandom(5 * 1024 * 1024 + 9)])
    await page.goto(stack.dashboard(stack.private, "preheats"))
    await page.select_option("#preheat-type", "image")
    await page.fill("#preheat-url", image.manifest_url(stack.registry.url))
    await page.click("#preheat-form button[type=submit]")
    await page.click("#confirm-ok")
    await expect(page.locator("#notice")).to_have_text("Preheat started.", timeout=UI_WAIT_MS)
    form = page.locator("#preheat-form")
    await expect(form).to_have_attribute("data-started", re.compile(r"^[0-9a-f]{64}$"), timeout=UI_WAIT_MS)
    pid = await form.get_attribute("data-started")
    row = page.locator(f'tr[data-preheat="{pid}"]')
    await expect(row).to_have_attribute("data-status", "SUCCESS", timeout=60_000)
    await expect(row.locator(".layer")).to_have_count(3)  # config and two layers, each with its bar
    await expect(row.locator('.layer .progress[aria-valuenow="100"]')).to_have_count(3)
    await shot(page, stack, "preheats")


async def test_delete_a_task_with_its_seed_files(page: Any, stack: Stack) -> None:
    seed_file = next(stack.cluster.seed_dir.rglob(stack.tid))
    await page.goto(stack.dashboard(stack.private, "tasks"))
    row = page.locator(f'tr[data-task="{stack.tid}"]')
    await row.locator('[data-action="delete"]').click()
    await page.check("#delete-files")
    await page.click("#confirm-ok")
    await expect(page.locator("#notice")).to_contain_text("deleted with its seed files", timeout=UI_WAIT_MS)
    await expect(row).to_have_count(0, timeout=UI_WAIT_MS)
    assert (await rest(stack, f"/api/v1/tasks/{stack.tid}")).status_code == 404
    assert not seed_file.exists()


async def test_public_reads_need_no_token_but_actions_do(page: Any, stack: Stack) -> None:
    context = await page.context.browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    phone = await context.new_page()
    await phone.goto(stack.dashboard(stack.public))
    await expect(phone.locator("#status-line")).to_contain_text("updated", timeout=UI_WAIT_MS)
    await expect(phone.locator("#login")).to_be_hidden()
    # Readable at phone width: nothing wider than the screen (tables scroll inside their box).
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(phone, stack, "overview-phone")
    await phone.goto(stack.dashboard(stack.public, "limits"))
    await expect(phone.locator("#now-peerUpLimit")).to_have_text("5", timeout=UI_WAIT_MS)
    await phone.fill("#limit-peerUpLimit", "9")
    await phone.click("#limits-form button[type=submit]")
    await phone.click("#confirm-ok")
    await expect(phone.locator("#error")).to_contain_text("401: missing Authorization", timeout=UI_WAIT_MS)
    await expect(phone.locator("#login")).to_be_visible()
    assert (await rest(stack, "/api/v1/limits")).json()["limits"]["peerUpLimit"] == 5
    await shot(phone, stack, "public-action-refused")
    await context.close()
