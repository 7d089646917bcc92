"""``Dfget``: one emulated dfget 0.4.x/1.0.x process downloading one URL (PROTOCOL §8).

The owner keeps the ``Uploader`` running after ``run()`` returns (other peers may still fetch from it)
and calls ``await uploader.stop()`` later, which sends service/down like the real peer server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import httpx

from app.protocol.taskid import filter_url_params
from app.swarm.api import ExchangeLog, SupernodeApi, make_http_client
from app.swarm.backsource import BackSourceError, back_source_download
from app.swarm.config import ClientConfig, VersionTraits
from app.swarm.p2p import P2PDownload
from app.swarm.ratelimit import TokenBucket
from app.swarm.register import (
    CODE_NEED_AUTH,
    RegisterFailed,
    Registrar,
    Registration,
    adjust_node_list,
)
from app.swarm.result import DfgetResult
from app.swarm.store import file_digest
from app.swarm.uploader import Uploader
from app.swarm.wire import (
    SUPERNODE_USER_AGENT,
    client_finish_query,
    make_cid,
    make_sign,
    metrics_body,
    node_host,
    parse_version,
    peer_path,
    register_body,
    split_header_flags,
    task_file_name,
)

# Back-source reasons (§8.8).
REASON_REGISTER_FAIL = 1
REASON_DOWNLOAD_ERROR = 3
REASON_NODE_EMPTY = 8
REASON_REFUSED = 1000


class Dfget:
    """One dfget download. ``uploader=None`` is the cdn pattern (port 0, no local peer server).

    ``nodes`` are the ``--node`` entries; how many migrations they allow depends on ``version`` (§5.1,
    see ``adjust_node_list``). ``rate_limit`` (bytes/s, dfget's ``--locallimit``; real 1.0.x defaults
    to 20 MiB/s, ``ratelimit.DFGET_1_0_DEFAULT_RATE``) bounds this client's piece and back-source reads;
    None reads as fast as the other end sends.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        url: str,
        output: Path,
        *,
        headers: Sequence[str] = (),
        md5: str = "",
        identifier: str = "",
        call_system: str = "",
        filters: Sequence[str] = (),
        dfdaemon: bool = False,
        uploader: Uploader | None = None,
        version: str = "0.4.1",
        back_source: bool = True,
        timeout: float | None = None,
        instant_pieces: bool = False,
        ip: str | None = None,
        host_name: str | None = None,
        sign: str | None = None,
        shuffle_nodes: bool = False,
        sleep_scale: float = 1.0,
        poll_timeout: float = 2.0,
        max_concurrent_pieces: int = 4,
        data_dir: Path | None = None,
        http: httpx.AsyncClient | None = None,
        seed: int | None = None,
        rate_limit: int | None = None,
    ) -> None:
        rng = random.Random(seed)
        traits = VersionTraits(parse_version(version))
        self.nodes = adjust_node_list(
            nodes, shuffle=shuffle_nodes, rng=rng, duplicate=traits.duplicates_node_list
        )
        self.uploader = uploader
        self.back_source = back_source
        self.timeout = timeout
        self._http = http
        self._data_dir = data_dir
        self._bucket = TokenBucket(rate_limit) if rate_limit else None
        sign = sign or make_sign()
        local_ip = ip or (uploader.ip if uploader is not None else "127.0.0.1")
        self.cfg = ClientConfig(
            cid=make_cid(local_ip, sign),
            sign=sign,
            ip=local_ip,
            host_name=host_name or socket.gethostname(),
            url=url,
            task_url=filter_url_params(url, filters),
            output=Path(output),
            task_file_name=task_file_name(Path(output).name, sign),
            version=version,
            headers=tuple(split_header_flags(headers, parse_version(version))),
            md5=md5,
            identifier=identifier,
            call_system=call_system,
            dfdaemon=dfdaemon,
            instant_pieces=instant_pieces,
            sleep_scale=sleep_scale,
            poll_timeout=poll_timeout,
            max_concurrent_pieces=max_concurrent_pieces,
            rate_limit=rate_limit,
            rng=rng,
        )
        self.result = DfgetResult(cid=self.cfg.cid, task_file_name=self.cfg.task_file_name)
        self._log = ExchangeLog(exchanges=self.result.exchanges, protocol_errors=self.result.protocol_errors)
        self._port = 0
        self._started = 0.0

    @property
    def cid(self) -> str:
        return self.cfg.cid

    @property
    def path(self) -> str:
        return peer_path(self.cfg.task_file_name)

    def registration_body(self, node: str, port: int | None = None) -> bytes:
        """The exact ``POST /peer/registry`` body this client sends to ``node`` (``port`` overrides)."""
        cfg = self.cfg
        return register_body(
            super_node_ip=node_host(node),
            raw_url=cfg.url,
            task_url=cfg.task_url,
            cid=cfg.cid,
            ip=cfg.ip,
            host_name=cfg.host_name,
            port=self._port if port is None else port,
            path=self.path,
            version=cfg.version,
            md5=cfg.md5,
            identifier=cfg.identifier,
            call_system=cfg.call_system,
            headers=cfg.headers,
            dfdaemon=cfg.dfdaemon,
        )

    async def run(self) -> DfgetResult:
        started = self._started = time.monotonic()
        http = self._http or make_http_client()
        try:
            await self._run(http)
        except Exception as exc:
            # Keep one broken peer from tearing down a whole swarm; the traceback says what broke.
            self.result.success = False
            self.result.error = f"emulator error: {exc!r}"
            self.result.traceback = traceback.format_exc()
        finally:
            if self._http is None:
                await http.aclose()
            self._finalize(time.monotonic() - started)
        if self.result.success and not self.cfg.instant_pieces and self.cfg.output.is_file():
            # Not a dfget step but the test's check, off the loop: hashing hundreds of MiB inline would stall
            # every other emulated client's requests past their 5 s deadline when many finish at once.
            self.result.sha256 = await asyncio.to_thread(file_digest, self.cfg.output, "sha256")
        return self.result

    # -- phases ----------------------------------------------------------------------------------

    async def _run(self, http: httpx.AsyncClient) -> None:
        api = SupernodeApi(http, self._log)
        p2p_pattern = await self._start_uploader_side(http)
        if not self.nodes:
            await self._back_source(http, REASON_NODE_EMPTY)
            return
        registrar = Registrar(
            api,
            self.nodes,
            self.registration_body,
            self.cfg.traits,
            self.result,
            sleep_scale=self.cfg.sleep_scale,
        )
        try:
            registration = await registrar.register()
        except RegisterFailed as exc:
            self.result.error = str(exc)
            if exc.code != CODE_NEED_AUTH:  # 608: dfget exits without back-source
                await self._back_source(http, REASON_REGISTER_FAIL)
            return
        self._registered(registration)
        download = P2PDownload(
            self.cfg,
            api,
            http,
            registrar,
            registration,
            self.result,
            uploader=self.uploader if p2p_pattern else None,
            data_file=self._data_file(p2p_pattern),
            bucket=self._bucket,
        )
        try:
            async with asyncio.timeout(self._download_timeout(registration)):
                self.result.success = await download.run()
        except RegisterFailed as exc:
            self.result.error = f"migration failed: {exc}"
            await self._back_source(http, REASON_DOWNLOAD_ERROR)
        except TimeoutError:
            self.result.error = "download timeout"
            if self.cfg.traits.back_source_after_timeout:
                await self._back_source(http, REASON_DOWNLOAD_ERROR)
        finally:
            if not p2p_pattern:
                download.data_file.unlink(missing_ok=True)
        if p2p_pattern:
            # dfget reports to its uploader whatever the outcome, naming the node it ended on.
            await self._client_finish(http, download.task_id, download.node)
        if self.cfg.traits.sends_metrics:
            await self._send_metrics(api, registration.task_id)

    async def _start_uploader_side(self, http: httpx.AsyncClient) -> bool:
        """p2p pattern needs a live peer server (ping, then /check/); else fall back to cdn pattern."""
        uploader = self.uploader
        if uploader is None or not uploader.running:
            return False
        try:
            ping = await http.get(f"{uploader.base_url}/server/ping", headers=_LOCAL_HEADERS)
        except httpx.HTTPError:
            return False
        if ping.status_code != 200:
            return False
        data_file = self._data_file(True)
        uploader.add_task(self.cfg.task_file_name, data_file)
        check_headers = {**_LOCAL_HEADERS, "Datadir": str(data_file.parent), "Totallimit": "0"}
        with contextlib.suppress(httpx.HTTPError):
            await http.get(f"{uploader.base_url}/check/{self.cfg.task_file_name}", headers=check_headers)
        self._port = uploader.port
        return True

    def _data_file(self, p2p_pattern: bool) -> Path:
        if p2p_pattern and self.uploader is not None:
            return (self._data_dir or self.uploader.data_dir) / f"{self.cfg.task_file_name}.service"
        return self.cfg.output.with_name(f"dfget-{self.cfg.sign}.tmp")

    def _registered(self, registration: Registration) -> None:
        self.result.task_id = registration.task_id
        self.result.node = registration.node
        self.result.file_length = registration.file_length
        self.result.piece_size = registration.piece_size

    def _download_timeout(self, registration: Registration) -> float:
        """``--timeout``, else ``fileLength/64 KiB + 10 s``, else 5 min (§8.2)."""
        if self.timeout is not None:
            return self.timeout
        if registration.file_length > 0:
            return registration.file_length // (64 * 1024) + 10
        return 300.0

    async def _back_source(self, http: httpx.AsyncClient, reason: int) -> None:
        if not self.back_source:
            self.result.back_source_reason = reason + REASON_REFUSED
            self.result.success = False
            return
        self.result.back_source_reason = reason
        self.result.back_sourced = True
        if self.cfg.instant_pieces:
            # Control-plane mode never moves bytes; the origin would have served the file.
            self.result.success = True
            return
        try:
            async with asyncio.timeout(self.timeout or 300.0):
                await back_source_download(
                    http, self.cfg.url, list(self.cfg.headers), self.cfg.output, md5=self.cfg.md5,
                    bucket=self._bucket,
                )
        except (BackSourceError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            self.result.error = f"{self.result.error}; back-source failed: {detail}".lstrip("; ")
            self.result.success = False
            return
        self.result.success = True

    async def _client_finish(self, http: httpx.AsyncClient, task_id: str, node: str) -> None:
        if self.uploader is None:
            return
        target = client_finish_query(
            task_file_name=self.cfg.task_file_name, task_id=task_id, cid=self.cfg.cid, super_node=node
        )
        with contextlib.suppress(httpx.HTTPError):
            await http.get(self.uploader.base_url + target, headers=_LOCAL_HEADERS)

    async def _send_metrics(self, api: SupernodeApi, task_id: str) -> None:
        """[1.0.x] ``POST /task/metrics``; dfget retries once unless the answer has ``code == 1``."""
        length = self.result.file_length
        if length < 0 and self.result.success and self.cfg.output.is_file():
            length = self.cfg.output.stat().st_size
        body = metrics_body(
            ip=self.cfg.ip,
            backsource_reason=self.result.back_source_reason,
            cid=self.cfg.cid,
            call_system=self.cfg.call_system,
            duration=round(time.monotonic() - self._started, 3),
            file_length=max(length, 0),
            port=self._port,
            success=self.result.success,
            task_id=task_id,
        )
        for _ in range(2):
            response = await api.post_json(self.result.node, "/task/metrics", body)
            if response.code == 1:
                return

    def _finalize(self, duration: float) -> None:
        result = self.result
        result.duration = duration
        result.supernode_5xx = self._log.supernode_5xx
        if result.success and not self.cfg.instant_pieces and self.cfg.output.is_file():
            result.bytes = self.cfg.output.stat().st_size
        elif result.success and self.cfg.instant_pieces:
            result.bytes = max(result.file_length, 0)


# Calls to the peer's own server close their connection: a real dfget and its server are processes of
# their own on the peer's host, but here thousands of them share one process and its fd limit, and an
# idle local connection costs two fds (both ends) for the peer's whole life. The supernode sees nothing
# of these calls.
_LOCAL_HEADERS = {"User-Agent": SUPERNODE_USER_AGENT, "Connection": "close"}
