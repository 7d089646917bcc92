"""Runs one preheat job: the single entry point shared by the Celery worker and embedded mode.

An image preheat lists the image's blobs (app.preheat.registry) and makes sure each one is a seeded
task with the id a dfget pulling that blob through dfdaemon gets (``task_id(blob_url)``), so the
next ``docker pull`` finds it in the seed cache. A file preheat does the same for one URL.

A blob whose task is missing, waiting, failed or stale is started exactly like a dfget registration
starts it (``ensure_task.lua``: single seed job cluster-wide, by epoch); the seed then runs right here,
inside this job, while it holds one of the ``DF_PREHEAT_CLUSTER_CONCURRENCY`` cluster slots. Running
it here (not as a separate Celery seed job) keeps the slot held exactly as long as the seed runs and
means a preheat never waits for a worker slot that other preheats occupy. A blob whose task another
seeder is already filling is only waited for; a task already SUCCESS is reused without any fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx

from app.audit.events import AuditEvent, AuditSink
from app.cdn.pins import pin
from app.cdn.policy import source_policy
from app.cdn.runner import run_seed_job
from app.cdn.source import make_source_client
from app.cdn.storage import SeedStorage
from app.core.config import Settings
from app.preheat.model import LayerProgress, PreheatRecord, Status
from app.preheat.registry import CredentialScope, RegistryAuth, RegistryError, image_blobs, parse_image_url
from app.preheat.state import PreheatTasks
from app.preheat.store import RUNNER_LEASE_SECONDS, PreheatStore
from app.protocol.taskid import filter_url_params, task_id
from app.state.schema import CdnStatus
from app.state.store import ClusterState

log = logging.getLogger("app.preheat.runner")

POLL_SECONDS = 0.25  # how often a waiting layer looks at its task (a Redis HMGET)
REPORT_SECONDS = 1.0  # how often progress is written (and the runner lease renewed)
SLOT_LEASE_SECONDS = 30.0
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class PreheatContext:
    settings: Settings
    state: ClusterState
    storage: SeedStorage
    audit: AuditSink


class _Superseded(Exception):
    """The job was restarted (newer epoch) or deleted: stop without touching its record."""


async def run_preheat_job(ctx: PreheatContext, pid: str, epoch: int) -> str:
    """Run (pid, epoch) unless another runner owns it; returns the final status or why it did not run."""
    store = PreheatStore(ctx.state.redis)
    if not await store.claim(pid, epoch):
        log.info("preheat %s epoch %s is not ours to run (superseded, duplicate or finished)", pid, epoch)
        return "superseded"
    record = await store.get(pid)
    if record is None:
        return "deleted"
    return await _Job(ctx, store, record, epoch).run()


class _Job:
    def __init__(self, ctx: PreheatContext, store: PreheatStore, record: PreheatRecord, epoch: int) -> None:
        self.ctx, self.store, self.record, self.epoch = ctx, store, record, epoch
        self.tasks = PreheatTasks(ctx.state)
        self.layers: list[LayerProgress] = []
        self.auth: RegistryAuth | None = None
        settings = ctx.settings
        self.timeout = record.request.timeout_seconds or settings.preheat_timeout_seconds
        self.concurrency = record.request.concurrency or settings.preheat_job_concurrency

    async def run(self) -> str:
        pid = self.record.id
        await self._audit("preheat.status", Status.RUNNING)
        log.info("preheat %s epoch %d start: %s %s", pid, self.epoch, self.record.request.type, self.record.request.url)
        settings = self.ctx.settings
        async with make_source_client(
            connect_timeout=settings.source_connect_timeout_seconds, read_timeout=settings.source_read_timeout_seconds,
            policy=source_policy(settings),
        ) as client:
            work = asyncio.create_task(self._work_with_timeout(client))
            reporter = asyncio.create_task(self._report_loop())
            try:
                await asyncio.wait({work, reporter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (work, reporter):
                    task.cancel()
                await asyncio.gather(work, reporter, return_exceptions=True)
        if work.cancelled() or isinstance(work.exception(), _Superseded):
            log.info("preheat %s epoch %d was restarted or deleted; stopped", pid, self.epoch)
            return "superseded"
        status, error = work.result()
        if not await self.store.update(pid, self.epoch, self.layers, status, error):
            return "superseded"
        await self._audit("preheat.status", status, error)
        log.info("preheat %s epoch %d end: %s %s", pid, self.epoch, status, error)
        return status

    async def _work_with_timeout(self, client: httpx.AsyncClient) -> tuple[str, str]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._work(client)
        except TimeoutError:
            done = sum(layer.state == Status.SUCCESS for layer in self.layers)
            seeded = f"{done} of {len(self.layers)} blobs seeded"
            return Status.FAILED, f"preheat timed out after {self.timeout:g}s ({seeded})"
        except RegistryError as exc:
            return Status.FAILED, exc.message
        except _Superseded:
            raise
        except Exception as exc:
            # Fail the job rather than leave it RUNNING: a restart would only hit the same bug.
            log.exception("preheat %s crashed", self.record.id)
            return Status.FAILED, f"internal preheat error: {exc!r}"

    async def _work(self, client: httpx.AsyncClient) -> tuple[str, str]:
        request = self.record.request
        if request.type == "image":
            ref = parse_image_url(request.url)
            robot = not request.username and self.record.origin == "webhook"
            scope = CredentialScope.parse(self.ctx.settings.harbor_registries,
                                          self.ctx.settings.harbor_token_realms) if robot else None
            self.auth = RegistryAuth(client, ref, request.headers, *self._credentials(), scope=scope)
            blobs = await image_blobs(self.auth, request.platform)
            self.layers = [LayerProgress(url=b.url, tid=task_id(b.url), digest=b.digest, total=b.size) for b in blobs]
        else:
            task_url = filter_url_params(request.url, request.filter.split("&"))
            tid = task_id(task_url, identifier=request.identifier, headers=request.headers)
            self.layers = [LayerProgress(url=request.url, tid=tid)]
        await self._report()
        limit = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self._layer(client, limit, layer) for layer in self.layers))
        failed = [layer for layer in self.layers if layer.state != Status.SUCCESS]
        if not failed:
            return Status.SUCCESS, ""
        shown = "; ".join(f"{layer.url}: {layer.error}" for layer in failed[:MAX_ERRORS_SHOWN])
        more = f" (and {len(failed) - MAX_ERRORS_SHOWN} more)" if len(failed) > MAX_ERRORS_SHOWN else ""
        return Status.FAILED, f"{len(failed)} of {len(self.layers)} blobs failed: {shown}{more}"

    def _credentials(self) -> tuple[str, str]:
        request, settings = self.record.request, self.ctx.settings
        if request.username:
            return request.username, request.password
        if self.record.origin == "webhook":
            return settings.harbor_registry_username, settings.harbor_registry_password
        return "", ""

    # --- one blob --------------------------------------------------------------------------------------

    async def _layer(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, layer: LayerProgress) -> None:
        async with limit:
            layer.state = Status.RUNNING
            first = True
            while True:
                snap = await self.tasks.snapshot(layer.tid)
                # A failure that predates this run is retried once; one seen while we wait is final.
                if snap.status in ("", CdnStatus.WAITING) or snap.stale or (snap.status == CdnStatus.FAILED and first):
                    refusal = await self._start(client, layer, retry_now=first)
                    first = False
                    if refusal is not None:
                        layer.state, layer.error = Status.FAILED, refusal
                        return
                    continue
                first = False
                if snap.status == CdnStatus.SUCCESS:
                    # Warmed for a pull that may come after the task state expired: the disk GC keeps it.
                    await pin(self.ctx.state.redis, layer.tid, self.record.id, self.ctx.settings.gc_preheat_pin_seconds)
                    layer.state, layer.bytes = Status.SUCCESS, max(snap.raw_length, 0)
                    layer.total = layer.bytes
                    return
                if snap.status == CdnStatus.FAILED:
                    layer.state, layer.error = Status.FAILED, snap.error or "seeding failed"
                    return
                await asyncio.sleep(POLL_SECONDS)

    async def _start(self, client: httpx.AsyncClient, layer: LayerProgress, retry_now: bool) -> str | None:
        """Take a cluster slot, create/trigger the task, and run its seed if we started it.

        Returns a refusal message when the source refused, None otherwise (the caller looks again).
        """
        member = f"{self.record.id}:{self.epoch}:{layer.tid}"
        settings = self.ctx.settings
        limit = settings.preheat_cluster_concurrency
        while not await self.tasks.acquire_slot(member, limit, SLOT_LEASE_SECONDS):
            snap = await self.tasks.snapshot(layer.tid)
            if snap.status == CdnStatus.SUCCESS or (snap.status == CdnStatus.RUNNING and not snap.stale):
                return None  # someone else is seeding it meanwhile: just wait for that
            await asyncio.sleep(POLL_SECONDS)
        try:
            request = self.record.request
            if self.auth is not None:
                headers, task_url, identifier = await self.auth.blob_headers(), layer.url, ""
            else:
                headers, identifier = request.headers, request.identifier
                task_url = filter_url_params(request.url, request.filter.split("&"))
            outcome = await self.tasks.ensure(
                client, layer.tid, task_url, layer.url, identifier, headers,
                retry_seconds=0.0 if retry_now else settings.seed_retry_seconds,
            )
            if outcome.result != "ok":
                return outcome.message or f"the seed task could not be created ({outcome.result})"
            if outcome.seed_epoch:
                keeper = asyncio.create_task(self._keep_slot(member, limit))
                try:
                    await run_seed_job(self.ctx.state, self.ctx.storage, layer.tid, outcome.seed_epoch)
                finally:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
            return None
        except RegistryError as exc:
            return exc.message
        finally:
            with contextlib.suppress(Exception):
                await self.tasks.release_slot(member)

    async def _keep_slot(self, member: str, limit: int) -> None:
        while True:
            await asyncio.sleep(SLOT_LEASE_SECONDS / 3)
            with contextlib.suppress(Exception):
                await self.tasks.renew_slot(member, limit, SLOT_LEASE_SECONDS)

    # --- progress ----------------------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        """Writes progress and renews the runner lease; returns (ending the job) once superseded."""
        interval = min(REPORT_SECONDS, RUNNER_LEASE_SECONDS / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                for layer in self.layers:
                    if layer.state == Status.RUNNING:
                        snap = await self.tasks.snapshot(layer.tid)
                        layer.bytes = snap.seeded_bytes
                        if snap.length >= 0:
                            layer.total = snap.length
                await self._report()
            except _Superseded:
                return
            except Exception:  # a Redis hiccup: the lease is long enough to try again
                log.warning("preheat %s: progress update failed", self.record.id, exc_info=True)

    async def _report(self) -> None:
        if not await self.store.update(self.record.id, self.epoch, self.layers):
            raise _Superseded

    async def _audit(self, action: str, status: str, error: str = "") -> None:
        record = self.record
        await self.ctx.audit.record(
            AuditEvent(
                actor=record.actor or "preheat", action=action, outcome="failed" if status == Status.FAILED else "ok",
                target=record.id, detail={"status": status, "url": record.request.url, "error": error,
                                          "blobs": len(self.layers), "epoch": self.epoch},
            )
        )
