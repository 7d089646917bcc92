"""The dfget-facing "0.3 bridge" (PROTOCOL §5): registration, pulls and reports.

Handlers stay thin; this module turns parsed requests into state calls and wire answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from app.audit.events import AuditEvent, AuditSink
from app.bridge.peer_ip import PeerAddress, ip_mismatch
from app.bridge.registration import ProbeWaits, probe_geometry
from app.bridge.task_metrics import parse_task_metrics
from app.cdn.dispatch import SeedDispatcher
from app.cdn.policy import SourceRefused, masked_url, source_policy
from app.cdn.source import convert_headers
from app.cluster.readiness import Readiness
from app.core.config import Settings
from app.core.redis import is_outage
from app.core.replay import ReplayBuffer
from app.limits.model import Limits as LiveValues
from app.limits.store import LiveLimits, effective_down_link
from app.protocol import wire
from app.protocol.codes import Code, PullStatus
from app.protocol.pieces import piece_num_of_range, piece_range, piece_size_for, provisional_piece_total
from app.protocol.taskid import cdn_path, task_id
from app.scheduler.core import CDN, Limits, schedule
from app.scheduler.snapshot import to_snapshot
from app.state.store import Assignment, ClusterState, PeerRegistration, parse_assignments
from app.tasks.refusals import record_refusal

log = logging.getLogger("app.bridge")

MAX_PIECE_NUM = 1 << 20  # far above any real file (15 MiB pieces); guards the bitmaps
# A Redis call made after a slow source probe still gets this long, inside dfget's 5 s.
_MIN_CALL_SECONDS = 0.5

T = TypeVar("T")


class StateUnavailable(Exception):
    """Redis stayed unreachable for the whole time this request may wait."""


class PeerBridge:
    def __init__(
        self,
        settings: Settings,
        state: ClusterState,
        dispatcher: SeedDispatcher,
        source: httpx.AsyncClient,
        audit: AuditSink | None = None,
        readiness: Readiness | None = None,
        replay: ReplayBuffer | None = None,
    ) -> None:
        self.settings = settings
        self._probes = ProbeWaits()  # concurrent first registrations of a task share one probe wait
        self.state = state
        self.dispatcher = dispatcher
        self.source = source
        self.audit = audit
        self.readiness = readiness if readiness is not None else Readiness()
        # Not ``replay or ...``: an empty buffer is falsy (it has a length).
        self.replay = replay if replay is not None else ReplayBuffer(
            settings.replay_buffer_limit, self.readiness.redis_failed
        )
        self.policy = source_policy(settings)
        self.limits = Limits(
            peer_down=settings.peer_down_limit,
            peer_up=settings.peer_up_limit,
            cdn_load=settings.cdn_load_limit,
            fail_count=settings.fail_count_limit,
            elimination=settings.elimination_limit,
        )
        self.rng = random.Random()
        self.live = LiveLimits(state.redis, settings)
        self._live_seen: LiveValues | None = None

    async def _limits(self) -> LiveValues:
        """The live limits (app.limits, cached ~1 s); the scheduler's copy follows them."""
        live = await self.live.current()
        if live is not self._live_seen:
            self._live_seen = live
            self.limits = replace(
                self.limits, peer_down=live.peer_down_limit, peer_up=live.peer_up_limit, cdn_load=live.cdn_load_limit
            )
        return live

    def dst_of(self, cid: str) -> str:
        """The seed cache appears to peers under any ``cdnnode:`` cid (the advertise IP may differ)."""
        return CDN if cid.startswith("cdnnode:") else cid

    def cdn_cid(self, tid: str) -> str:
        return f"{self.settings.cdn_cid_prefix}{tid}"

    # --- /peer/registry ---------------------------------------------------------------------------

    # --- riding out a Redis outage ---------------------------------------------------------------
    #
    # dfget pays for any answer it does not expect with a migration (PROTOCOL §8.5), and a VIP listed N
    # times buys it N-1 of them. So while Redis is away (a restart, a failover, a blip) a request waits
    # a little and then gets the answer that costs nothing: a pull 602 (ask again), a registration
    # 609 (retry the same node after a pause), a report a normal reply (it is replayed later).

    async def _within(self, deadline: float, call: Awaitable[T]) -> T:
        """One Redis call, cut off at the request's deadline (but never given less than a moment)."""
        async with asyncio.timeout(max(deadline - time.monotonic(), _MIN_CALL_SECONDS)):
            return await call

    async def _hold(self, deadline: float, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it gets through to Redis or the deadline passes (StateUnavailable)."""
        delay = 0.05
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.readiness.redis_failed(exc)
                remaining = deadline - time.monotonic()
                if remaining <= delay:
                    raise StateUnavailable(type(exc).__name__) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            else:
                return result

    async def _report(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        """An idempotent report: written now, or buffered and replayed once Redis answers again."""
        deadline = time.monotonic() + self.settings.pull_hold_seconds
        try:
            await self._hold(deadline, lambda: self._within(deadline, write()))
        except StateUnavailable:
            self.replay.add(what, write)

    # --- /peer/registry ---------------------------------------------------------------------------

    async def register(self, body: bytes, content_type: str, peer: PeerAddress | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.settings.register_hold_seconds
        try:
            req = wire.parse_register(wire.decode_body(body, content_type))
        except wire.WireError as exc:
            return wire.result(Code.PARAM_ERROR, str(exc))
        if self.settings.peer_ip_check and (spoofed := ip_mismatch(req.ip, peer, self.settings.trusted_proxies)):
            return wire.result(Code.PARAM_ERROR, spoofed)
        headers = convert_headers(req.header_entries)
        task_url = req.task_url or req.raw_url
        tid = task_id(task_url, req.md5, req.identifier, headers)

        forbidden = await self._forbidden_source(req.raw_url, tid, req.ip)
        if forbidden is not None:
            return wire.result(Code.URL_NOT_REACHABLE, forbidden)
        registration = PeerRegistration(
            tid=tid, cid=req.cid, task_url=task_url, raw_url=req.raw_url, md5=req.md5, identifier=req.identifier,
            headers=headers, peer_id=f"{req.host_name}-{req.ip}-{time.time_ns()}", ip=req.ip, port=req.port,
            path=req.path, host_name=req.host_name, version=req.version, super_node_ip=req.super_node_ip,
            call_system=req.call_system, dfdaemon=req.dfdaemon,
        )
        probed: list[int | str] = []  # this request's probe verdict, kept across attempts
        try:
            return await self._hold(deadline, lambda: self._register_once(registration, deadline, probed))
        except StateUnavailable as exc:
            return wire.result(Code.WAIT_AUTH, f"cluster state unavailable ({exc}), please retry")

    async def _register_once(
        self, registration: PeerRegistration, deadline: float, probed: list[int | str]
    ) -> dict[str, Any]:
        tid = registration.tid
        refused = await self._within(deadline, self.state.unreachable_reason(tid))
        if refused is not None:
            return wire.result(Code.URL_NOT_REACHABLE, refused)
        outcome = await self._within(deadline, self.state.register(registration, None, 0, 0))
        unprobed = outcome.result == "unprobed"
        if unprobed:
            if not probed:
                probed.append(await self._probes.geometry(tid, lambda: probe_geometry(
                    self.settings, self.state, self.source, tid, registration.raw_url, registration.headers
                )))
            geometry = probed[0]
            if isinstance(geometry, str):
                return wire.result(Code.URL_NOT_REACHABLE, geometry)
            piece_size = piece_size_for(geometry)
            # The probe lock is left to expire: once the task exists nobody needs it.
            outcome = await self._within(deadline, self.state.register(
                registration, geometry, piece_size, provisional_piece_total(geometry, piece_size)
            ))
        if outcome.result == "conflict":
            return wire.result(606, f"task {tid} exists with another url, md5 or identifier")
        if outcome.result != "ok":
            return wire.result(Code.SYSTEM_ERROR, "task expired during registration, please retry")
        if outcome.seed_epoch:
            await self.dispatcher.dispatch(tid, outcome.seed_epoch)
        # The task did not exist before our probe and this call started its first seed (epoch 1): this
        # registration created it. (A concurrent creator would have started that seed itself.)
        await self._audit_registration(registration, outcome.http_file_length, unprobed and outcome.seed_epoch == 1)
        return wire.register_ok(tid, outcome.http_file_length, outcome.piece_size)

    async def _audit_registration(self, reg: PeerRegistration, length: int, created: bool) -> None:
        """One XADD per registration (two for a new task): never the database, on dfget's path."""
        if self.audit is None:
            return
        if created:
            await self.audit.record(AuditEvent(
                actor="dfget", action="task.created", task_id=reg.tid, target=reg.task_url, source_ip=reg.ip,
                detail={"cid": reg.cid, "hostName": reg.host_name, "httpFileLength": length,
                        "callSystem": reg.call_system, "dfdaemon": reg.dfdaemon},
            ))
        await self.audit.record(AuditEvent(
            actor="dfget", action="peer.registered", task_id=reg.tid, target=reg.peer_id, source_ip=reg.ip,
            detail={"cid": reg.cid, "hostName": reg.host_name, "port": reg.port, "version": reg.version,
                    "newTask": created},
        ))

    async def _forbidden_source(self, url: str, tid: str, ip: str) -> str | None:
        """The source policy's refusal (app.cdn.policy), audited; None when the URL may be fetched.

        Checked on every registration, not only the probing one: for an existing task, a new rawUrl
        is what a seed retry would fetch. A host that does not resolve is left to the probe and the
        seeder (a DNS blip must not turn away peers of an already seeded task).
        """
        try:
            await self.policy.check(url)
        except SourceRefused as exc:
            if exc.reason != "forbidden":
                return None
            # The policy counted and logged it; the audit event and the task detail's record say it per
            # task (the task is never created, so the record is all GET /api/v1/tasks/{id} can show).
            shown = masked_url(url)
            if self.audit is not None:
                await self.audit.record(AuditEvent(actor="dfget", action="source.refused", outcome="refused",
                                                   task_id=tid, target=shown, source_ip=ip,
                                                   detail={"reason": exc.message, "class": exc.kind}))
            await record_refusal(self.state.redis, tid, exc.kind, exc.message, shown, self.settings.task_ttl_seconds)
            return exc.message
        return None

    # --- /peer/task ---------------------------------------------------------------------------------

    async def pull(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            req = wire.parse_pull(query)
        except wire.WireError as exc:
            return wire.result(Code.PARAM_ERROR, str(exc))
        if req.status not in (PullStatus.START, PullStatus.RUNNING, PullStatus.FINISH):
            return wire.result(Code.PARAM_ERROR, f"unknown status {req.status}")
        piece_num = piece_num_of_range(req.range) if req.range else -1
        if piece_num >= MAX_PIECE_NUM:
            return wire.result(Code.PARAM_ERROR, f"range {req.range} is out of bounds")
        deadline = time.monotonic() + self.settings.pull_hold_seconds
        try:
            live = await self._limits()
            out = await self._hold(deadline, lambda: self._within(deadline, self.state.pull(
                req.task_id, req.src_cid, req.status, req.result, piece_num, self.dst_of(req.dst_cid),
                req.fingerprint, live.peer_down_limit,
            )))
            kind = out["kind"]
            if kind == "snapshot":
                picks = schedule(to_snapshot(out), self.limits, self.rng)
                assigned = await self._hold(deadline, lambda: self._within(deadline, self.state.assign(
                    req.task_id, req.src_cid, req.fingerprint, picks, live.peer_up_limit, live.cdn_load_limit
                ))) if picks else []
                return self._pieces(req.task_id, out, assigned, live)
        except StateUnavailable as exc:
            # dfget resends this very request after a 602, so the outcome it reports is not lost; and
            # if the assignment went through unseen, the same request is answered with the same pieces.
            return wire.result(Code.PEER_WAIT, f"cluster state unavailable ({exc}): peer should wait")
        if kind == "replay":
            return self._pieces(req.task_id, out, parse_assignments(out["assigned"]), live)
        if kind == "wait":
            if out.get("seedEpoch"):
                await self.dispatcher.dispatch(req.task_id, int(out["seedEpoch"]))
            return self._wait(out)
        if kind == "finish":
            return wire.finish(int(out["fileLength"]), out.get("md5") or "")
        if kind == "failed":
            return wire.result(Code.SYSTEM_ERROR, f"taskID {req.task_id}: cdn status is fail: {out.get('msg', '')}")
        if kind == "param":
            return wire.result(Code.PARAM_ERROR, out.get("msg", "param is illegal"))
        return wire.result(Code.TARGET_NOT_FOUND, f"taskID {req.task_id} or cid {req.src_cid} not found")

    def _wait(self, out: dict[str, Any]) -> dict[str, Any]:
        return wire.result(
            Code.PEER_WAIT, f"clientSucCount:{out.get('have', 0)},cdnSucCount:{out.get('cdn', 0)}: peer should wait"
        )

    def _pieces(
        self, tid: str, out: dict[str, Any], assigned: list[Assignment], live: LiveValues
    ) -> dict[str, Any]:
        # An empty 601 would stall dfget 0.4.x for good (§5.2); "ask again" is the honest answer.
        if not assigned:
            return self._wait(out)
        piece_size = int(out["pieceSize"])
        down_link = effective_down_link(live, out.get("downLink"))
        cdn_ip = out.get("superNodeIp") or self.settings.advertise_ip
        tasks = []
        for item in assigned:
            if item.dst == CDN:
                cid, ip, port, path = self.cdn_cid(tid), cdn_ip, self.settings.piece_port, cdn_path(tid)
            else:
                cid, ip, port, path = item.dst, item.ip, item.port, item.path
            tasks.append(
                wire.piece_task(
                    piece_range(item.piece_num, piece_size), item.piece_num, piece_size, item.md5, cid, ip, port,
                    path, down_link,
                )
            )
        return wire.result(Code.PEER_CONTINUE, data=tasks)

    # --- reports --------------------------------------------------------------------------------------

    async def piece_success(self, query: dict[str, str]) -> dict[str, Any]:
        tid, cid = query.get("taskId", ""), query.get("cid", "")
        piece_num = piece_num_of_range(query.get("pieceRange", ""))
        if not tid or not cid or not 0 <= piece_num < MAX_PIECE_NUM:
            return wire.result(Code.PARAM_ERROR, "taskId, cid and a valid pieceRange are required")
        dst = self.dst_of(query.get("dstCid", ""))
        await self._report(f"piece {piece_num} of {cid}", lambda: self.state.piece_success(tid, cid, piece_num, dst))
        return wire.result(Code.PIECE_REPORTED)

    async def piece_error(self, query: dict[str, str]) -> dict[str, Any]:
        tid, src = query.get("taskId", ""), query.get("srcCid", "")
        if tid and src:
            dst, kind = self.dst_of(query.get("dstCid", "")), query.get("errorType", "")
            await self._report(f"piece error of {src}", lambda: self.state.piece_error(tid, src, dst, kind))
        return wire.result(Code.SUCCESS)

    async def task_metrics(self, body: bytes) -> dict[str, Any]:
        """[1.0.x] ``POST /task/metrics`` (§6.1): the one report of back-to-source bytes (app.state.traffic).

        Always ``{"code": 1}`` (it stops dfget's retry); a body we cannot use is simply not counted.
        """
        report = parse_task_metrics(body)
        if report is not None and report.back_sourced:
            tid, cid, length = report.task_id, report.cid, report.file_length
            await self._report(f"back-source of {cid}", lambda: self.state.back_source(tid, cid, length))
        return {"code": 1}

    async def service_down(self, query: dict[str, str]) -> dict[str, Any]:
        tid, cid = query.get("taskId", ""), query.get("cid", "")
        if tid and cid:
            audit = self.audit

            async def down() -> None:
                known = await self.state.service_down(tid, cid)
                if audit is not None:
                    await audit.record(AuditEvent(
                        actor="dfget", action="peer.gone", outcome="ok" if known else "unknown", task_id=tid,
                        target=cid,
                    ))

            await self._report(f"service down of {cid}", down)
        return wire.result(Code.PEER_DOWN_REPORTED)

