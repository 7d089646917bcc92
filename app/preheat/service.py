"""What the preheat endpoints do (legacy, Open API, webhook), independent of their wire shapes."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.audit.events import AuditEvent, AuditSink
from app.cdn.policy import SourceRefused, source_policy
from app.cdn.storage import SeedStorage
from app.core.config import Settings
from app.preheat.dispatch import PreheatDispatcher, preheat_dispatcher
from app.preheat.model import PreheatRecord, PreheatRequest
from app.preheat.registry import RegistryError, parse_image_url
from app.preheat.runner import PreheatContext
from app.preheat.store import OapiJob, PreheatStore, now_ms
from app.state.store import ClusterState


class PreheatRefused(Exception):
    """The request cannot be accepted (bad URL, or the source policy refuses it): a 4xx."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PreheatService:
    def __init__(
        self, settings: Settings, store: PreheatStore, dispatcher: PreheatDispatcher, audit: AuditSink
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.audit = audit

    @classmethod
    def build(
        cls, settings: Settings, redis: aioredis.Redis, state: ClusterState, storage: SeedStorage, audit: AuditSink
    ) -> PreheatService:
        """Celery jobs when a broker is configured, in-process jobs otherwise (like seeding)."""
        dispatcher = preheat_dispatcher(settings.broker_url, PreheatContext(settings, state, storage, audit))
        return cls(settings, PreheatStore(redis), dispatcher, audit)

    async def close(self) -> None:
        await self.dispatcher.close()

    # --- create ---------------------------------------------------------------------------------------

    async def create(self, request: PreheatRequest, actor: str, origin: str, source_ip: str = "") -> str:
        """Start (or join, or restart) the preheat; returns its id. Raises PreheatRefused."""
        await self._check(request, actor, source_ip)
        pid, outcome = await self.store.create(request, actor, origin)
        if outcome.epoch:
            await self.dispatcher.dispatch(pid, outcome.epoch)
        action = "preheat.joined"  # a create while the same preheat runs: nothing new starts
        if outcome.epoch:
            action = "preheat.restarted" if outcome.previous else "preheat.created"
        await self._record(actor, action, pid, source_ip, url=request.url, type=request.type, origin=origin,
                           previous=outcome.previous, platform=request.platform)
        return pid

    async def _check(self, request: PreheatRequest, actor: str, source_ip: str) -> None:
        try:
            if request.type == "image":
                parse_image_url(request.url)
            await source_policy(self.settings).check(request.url)
        except (RegistryError, SourceRefused) as exc:
            await self._record(actor, "preheat.refused", "", source_ip, outcome="refused", url=request.url,
                               reason=exc.message)
            raise PreheatRefused(exc.message) from exc

    # --- read, delete ------------------------------------------------------------------------------------

    async def get(self, pid: str) -> PreheatRecord | None:
        record = await self.store.get(pid)
        if record is not None and not record.finished and now_ms() > record.lease_ms:
            # Its runner died or its job message was lost: run it again, as a pull re-triggers a lost seed.
            _, outcome = await self.store.create(record.request, record.actor, record.origin)
            if outcome.epoch:
                await self.dispatcher.dispatch(pid, outcome.epoch)
                await self._record(record.actor, "preheat.restarted", pid, "", url=record.request.url,
                                   previous=outcome.previous, reason="runner lease lapsed")
            record = await self.store.get(pid)
        return record

    async def list_page(self, limit: int, offset: int) -> list[PreheatRecord]:
        return await self.store.list_records(limit, offset)

    async def delete(self, pid: str, actor: str, source_ip: str = "") -> bool:
        removed = await self.store.delete(pid)
        if removed:
            await self._record(actor, "preheat.deleted", pid, source_ip)
        return removed

    # --- Open API jobs -----------------------------------------------------------------------------------

    async def create_job(self, request: PreheatRequest, args: dict[str, object], actor: str, source_ip: str) -> OapiJob:
        pid = await self.create(request, actor, "oapi", source_ip)
        return await self.store.create_oapi_job(pid, dict(args), actor)

    async def get_job(self, job_id: int) -> tuple[OapiJob, PreheatRecord | None] | None:
        job = await self.store.get_oapi_job(job_id)
        if job is None:
            return None
        return job, await self.get(job.preheat_id)

    async def _record(self, actor: str, action: str, target: str, source_ip: str, outcome: str = "ok",
                      **detail: object) -> None:
        await self.audit.record(
            AuditEvent(actor=actor, action=action, outcome=outcome, target=target, source_ip=source_ip,
                       detail={k: v for k, v in detail.items() if v not in ("", None)})
        )
