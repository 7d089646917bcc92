"""dfget's p2p downloader: single puller, piece clients, writer and finish (PROTOCOL §8.3-§8.7)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from app.protocol.codes import Code, PullResult, PullStatus
from app.protocol.pieces import unframe_piece
from app.swarm.api import ApiResponse, SupernodeApi, go_struct
from app.swarm.config import ClientConfig
from app.swarm.merge import Item, ItemMerger
from app.swarm.ratelimit import TokenBucket
from app.swarm.register import Registrar, Registration
from app.swarm.result import DfgetResult, PieceFetch
from app.swarm.store import PieceFile, file_digest, place_file
from app.swarm.uploader import Uploader
from app.swarm.wire import SUPERNODE_USER_AGENT, piece_error_query, piece_suc_query, pull_query

_PIECE_TASK = {
    "range": str,
    "pieceNum": int,
    "pieceSize": int,
    "pieceMd5": str,
    "cid": str,
    "peerIp": str,
    "peerPort": int,
    "path": str,
    "downLink": int,
}
_FINISH_DATA = {"md5": str, "fileLength": int}
# 0.4.x leaves the wait loop only on these; 1.0.1+ also hands 602 back to the main loop (§8.5).
_ACCEPTED = frozenset({Code.PEER_CONTINUE, Code.PEER_FINISH, 603, Code.SUCCESS})
_FAIL_REQUEUE_DELAY = 0.02  # a failed piece is reported 20 ms later (power_client.go)
_RESET, _LAST = "reset", "last"


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass(frozen=True)
class PieceTask:
    range: str
    piece_num: int
    piece_size: int
    piece_md5: str
    cid: str
    peer_ip: str
    peer_port: int
    path: str
    down_link: int

    @classmethod
    def decode(cls, raw: object) -> PieceTask:
        f = go_struct(raw, _PIECE_TASK)
        return cls(
            range=str(f["range"]),
            piece_num=int(f["pieceNum"]),
            piece_size=int(f["pieceSize"]),
            piece_md5=str(f["pieceMd5"]),
            cid=str(f["cid"]),
            peer_ip=str(f["peerIp"]),
            peer_port=int(f["peerPort"]),
            path=str(f["path"]),
            down_link=int(f["downLink"]),
        )


@dataclass(frozen=True)
class _WriteJob:
    task: PieceTask
    payload: bytes
    node: str
    task_id: str


class P2PDownload:
    """One p2p download after a successful registration; ``run`` returns when a 600 arrived.

    Raises RegisterFailed when a migration found no node (the caller then back-sources).
    """

    def __init__(
        self,
        cfg: ClientConfig,
        api: SupernodeApi,
        http: httpx.AsyncClient,
        registrar: Registrar,
        registration: Registration,
        result: DfgetResult,
        *,
        uploader: Uploader | None,
        data_file: Path,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.cfg = cfg
        self.traits = cfg.traits
        self.api = api
        self.http = http
        self.registrar = registrar
        self.result = result
        self.uploader = uploader
        self.node = registration.node
        self.task_id = registration.task_id
        # [announced, latest]: a migration to a node with another piece size restarts the file.
        self.piece_sizes = [registration.piece_size, registration.piece_size]
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.merger = ItemMerger()
        self.writes: asyncio.Queue[_WriteJob | str] = asyncio.Queue()
        self.notify: asyncio.Queue[None] = asyncio.Queue()
        self.data_file = data_file
        self.file: PieceFile | None = None if cfg.instant_pieces else PieceFile(data_file)
        self._slots = asyncio.Semaphore(cfg.max_concurrent_pieces)
        # One limiter for all of this dfget's reads, as in dfget (shared by its PowerClients).
        self._bucket = bucket
        self._wait_ms = (50, 100)
        self._last_rate_call = float("-inf")
        self._downloads: set[asyncio.Task[None]] = set()
        self._reports: set[asyncio.Task[object]] = set()
        self._writer: asyncio.Task[None] | None = None

    @property
    def p2p_pattern(self) -> bool:
        return self.uploader is not None

    # -- main loop -------------------------------------------------------------------------------

    async def run(self) -> bool:
        """True when the file was finished (and placed, unless instant mode)."""
        self._writer = asyncio.create_task(self._write_loop())
        self.queue.put_nowait(Item.start(self.node, self.task_id))
        try:
            while True:
                polled = await self._poll()
                item = self.merger.take(
                    polled,
                    self.queue.qsize(),
                    node=self.node,
                    task_id=self.task_id,
                    piece_size=self.piece_sizes[1],
                )
                if item is None:
                    continue
                response, item = await self._pull(item)
                if response.code == Code.PEER_CONTINUE:
                    await self._process(response, item)
                elif response.code == Code.PEER_FINISH:
                    return await self._finish(response)
                # 602 handed back (1.0.1+), 603, 200: nothing to do but keep polling.
        finally:
            await self._shutdown()

    async def _poll(self) -> Item | None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands
        # as the queue hands out an item, and then the download's overall timeout never ends the loop.
        try:
            async with asyncio.timeout(self.cfg.poll_timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def _pull(self, item: Item) -> tuple[ApiResponse, Item]:
        """``pullPieceTask``: 602 loop on the SAME request, then migration on anything unexpected."""
        target = pull_query(
            src_cid=self.cfg.cid,
            dst_cid=item.dst_cid,
            range_=item.range,
            result=item.result,
            status=item.status,
            task_id=item.task_id,
        )
        while True:
            response = await self.api.get(item.node, target)
            self.result.pulls += 1
            decodable = self._decodable(response, item.node)
            if not decodable or response.code != Code.PEER_WAIT:
                break
            if self.traits.backoff_602:
                if self.queue.qsize() > 0:
                    break
                await self._sleep_interval()
            else:
                await asyncio.sleep(self.cfg.rng.randint(600, 1999) / 1000 * self.cfg.sleep_scale)
        accepted = _ACCEPTED | {Code.PEER_WAIT} if self.traits.backoff_602 else _ACCEPTED
        if decodable and response.code in accepted:
            return response, item
        self.result.migrations += 1
        registration = await self.registrar.register()
        self.result.node = registration.node
        self.piece_sizes[1] = registration.piece_size
        moved = replace(item, status=PullStatus.START, node=registration.node, task_id=registration.task_id)
        return await self._pull(moved)

    def _decodable(self, response: ApiResponse, node: str) -> bool:
        """A 601/600 body dfget cannot decode is a transport error for it (→ migration)."""
        if response.code is None:
            return False
        try:
            if response.code == Code.PEER_CONTINUE and response.data is not None:
                if not isinstance(response.data, list):
                    raise TypeError("601 data is not an array")
                for raw in response.data:
                    PieceTask.decode(raw)
            elif response.code == Code.PEER_FINISH and response.data is not None:
                go_struct(response.data, _FINISH_DATA)
        except TypeError as exc:
            self.result.protocol_errors.append(f"GET /peer/task on {node}: {exc}")
            return False
        return True

    async def _sleep_interval(self) -> None:
        """1.0.1+: random wait in a window doubling from 50-100 ms up to 800-1600 ms."""
        low, high = self._wait_ms
        expected = self.cfg.rng.randint(low, high - 1) / 1000 * self.cfg.sleep_scale
        # A successful /peer/piece/suc report of this process ends the wait early.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(expected):  # not wait_for: see _poll
                await self.notify.get()
        if low < 800:
            self._wait_ms = (low * 2, high * 2)

    async def _process(self, response: ApiResponse, item: Item) -> None:
        self._refresh(item)
        tasks = response.data if isinstance(response.data, list) else []
        started_before = len(self._downloads)
        for raw in tasks:
            task = PieceTask.decode(raw)
            if self.merger.is_done(task.range):
                self.queue.put_nowait(
                    Item(
                        status=PullStatus.RUNNING,
                        result=PullResult.SEMI_SUCCESS,
                        node=self.node,
                        task_id=self.task_id,
                        range=task.range,
                        dst_cid=task.cid,
                    )
                )
            elif not self.merger.is_known(task.range):
                self.merger.mark_running(task.range)
                await self._pull_rate(task)
                job = asyncio.create_task(self._download(task, self.node, self.task_id))
                self._downloads.add(job)
                job.add_done_callback(self._downloads.discard)
        if len(self._downloads) == started_before == 0 and self.queue.empty() and self.merger.held is None:
            # §5.2: dfget now only polls its empty queue and never asks again (hangs until timeout).
            self.result.protocol_errors.append(
                f"GET /peer/task on {item.node}: 601 without a usable piece while nothing is in flight"
            )

    def _refresh(self, item: Item) -> None:
        if self.piece_sizes[0] != self.piece_sizes[1]:
            self.piece_sizes[0] = self.piece_sizes[1]
            self.writes.put_nowait(_RESET)
            self.merger.reset()
        if self.node != item.node:
            self.node, self.task_id = item.node, item.task_id

    async def _pull_rate(self, task: PieceTask) -> None:
        """Ask the local uploader for a rate at most every 3 s (only the request matters here)."""
        loop = asyncio.get_running_loop()
        if self.uploader is None or self.cfg.instant_pieces or loop.time() - self._last_rate_call < 3:
            return
        self._last_rate_call = loop.time()
        # --locallimit when set (here: the emulated limit), else the piece task's downLink in KiB/s.
        rate = self.cfg.rate_limit or task.down_link * 1024
        headers = {"User-Agent": SUPERNODE_USER_AGENT, "rateLimit": str(rate), "Connection": "close"}  # see client.py
        with contextlib.suppress(httpx.HTTPError):
            await self.http.get(f"{self.uploader.base_url}/rate/{self.cfg.task_file_name}", headers=headers)

    # -- one piece (PowerClient) -----------------------------------------------------------------

    async def _download(self, task: PieceTask, node: str, task_id: str) -> None:
        async with self._slots:
            payload, error_query = await self._fetch(task, task_id)
        if payload is not None:
            self.result.pieces_by_cid[task.cid] += 1
            self.writes.put_nowait(_WriteJob(task, payload, node, task_id))
            self.queue.put_nowait(
                Item(
                    status=PullStatus.RUNNING,
                    result=PullResult.SEMI_SUCCESS,
                    node=node,
                    task_id=task_id,
                    range=task.range,
                    dst_cid=task.cid,
                    piece_size=task.piece_size,
                )
            )
            return
        self.result.piece_failures += 1
        failed = Item(
            status=PullStatus.RUNNING,
            result=PullResult.FAIL,
            node=node,
            task_id=task_id,
            range=task.range,
            dst_cid=task.cid,
        )
        asyncio.get_running_loop().call_later(_FAIL_REQUEUE_DELAY, self.queue.put_nowait, failed)
        if error_query is not None:
            self._spawn_report(self.api.get(self.node, error_query))

    async def _fetch(self, task: PieceTask, task_id: str) -> tuple[bytes | None, str | None]:
        """(payload, None) on success; (None, piece-error query or None) on failure."""
        peer = f"{task.peer_ip}:{task.peer_port}"
        if self.cfg.instant_pieces:
            self.result.piece_fetches.append(PieceFetch(task.cid, peer, task.range, None, True, "instant"))
            return b"", None
        headers = {
            "User-Agent": self.cfg.user_agent,
            "Range": f"bytes={task.range}",
            "Piecenum": str(task.piece_num),
            "Piecesize": str(task.piece_size),
        }
        try:
            status, body = await self._get_piece(f"http://{peer}{task.path}", headers, task.piece_size)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, TimeoutError) as exc:
            # Unreachable peer, reset connection, a body cut short, the 1.0.x piece deadline, or a
            # peerIp/path that is not even a URL.
            self._fetched(task, peer, None, False, type(exc).__name__)
            return None, None
        if not 200 <= status < 300:
            self._fetched(task, peer, status, False, "http status")
            if status == 404:
                return None, piece_error_query(
                    error_type="FILE_NOT_EXIST", src_cid=self.cfg.cid, dst_cid=task.cid, task_id=task_id
                )
            return None, None
        expected = task.piece_md5.split(":", 1)[0]
        if expected:
            # In a thread (hashlib lets go of the GIL): 4 MiB take milliseconds the loop needs for others.
            real = await asyncio.to_thread(_md5_hex, body)
            if real != expected:
                self._fetched(task, peer, status, False, "md5 mismatch")
                return None, piece_error_query(
                    error_type="FILE_MD5_NOT_MATCH",
                    src_cid=self.cfg.cid,
                    dst_cid=task.cid,
                    task_id=task_id,
                    dst_ip=task.peer_ip,
                    range_=task.range,
                    real_md5=real,
                    expected_md5=expected,
                )
        self._fetched(task, peer, status, True)
        return unframe_piece(body), None

    async def _get_piece(self, url: str, headers: dict[str, str], piece_size: int) -> tuple[int, bytes]:
        """GET one piece: (status, whole body), read through the rate limit when there is one.

        1.0.x bounds the whole request by pieceSize/64 KiB + 10 s (Go's client timeout is a deadline,
        not a per-read limit); 0.4.x only bounds the connect (3 s).
        """
        deadline = self.traits.piece_timeout(piece_size)
        timeout = httpx.Timeout(deadline, connect=3.0 if deadline is None else deadline)
        async with asyncio.timeout(deadline):
            if self._bucket is None:
                response = await self.http.get(url, headers=headers, timeout=timeout)
                return response.status_code, response.content
            async with self.http.stream("GET", url, headers=headers, timeout=timeout) as streamed:
                chunks = []
                # Raw reads as they come off the socket (at most httpcore's 64 KiB each), paid as read,
                # like Go's io.Reader behind dfget's limiter; aiter_bytes() would copy them once more into
                # fixed-size chunks. Piece answers carry no Content-Encoding to decode.
                async for chunk in streamed.aiter_raw():
                    await self._bucket.take(len(chunk))
                    chunks.append(chunk)
                return streamed.status_code, b"".join(chunks)

    def _fetched(self, task: PieceTask, peer: str, status: int | None, ok: bool, reason: str = "") -> None:
        self.result.piece_fetches.append(PieceFetch(task.cid, peer, task.range, status, ok, reason))

    # -- writer and reports (ClientWriter) -------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            job = await self.writes.get()
            if job == _LAST:
                return
            if job == _RESET:
                if self.file is not None:
                    self.file.truncate()
                continue
            assert isinstance(job, _WriteJob)
            if self.file is not None:
                offset = job.task.piece_num * (job.task.piece_size - 5)
                await self.file.write(offset, job.payload)
            if self.p2p_pattern or self.traits.reports_suc_in_cdn_pattern:
                self._spawn_report(self._report_success(job))

    async def _report_success(self, job: _WriteJob) -> None:
        target = piece_suc_query(
            task_id=job.task_id, cid=self.cfg.cid, dst_cid=job.task.cid, piece_range=job.task.range
        )
        # Sent once, whatever the answer. PROTOCOL §5.3 reads dfget 1.0.1+ as retrying a failed report up
        # to 3 times, but dfget 1.0.6 was seen not to (issue 6: a lost report left its piece "in flight"
        # until its lease ran out), so the emulator keeps the harsher, observed behaviour for every version.
        # Sent to the node the piece was scheduled by, even after a migration (§8.5).
        response = await self.api.get(job.node, target)
        if response.http_status == 200 and response.json_ok:
            self.notify.put_nowait(None)

    def _spawn_report(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.create_task(coro)
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    # -- finish and cleanup ----------------------------------------------------------------------

    async def _finish(self, response: ApiResponse) -> bool:
        expected_md5 = self.cfg.md5
        if not expected_md5 and self.traits.uses_finish_md5:
            if response.data is None:
                # dfget 1.0.6 dereferences the missing finish data and crashes (§5.2).
                self.result.protocol_errors.append("GET /peer/task: 600 without data (dfget 1.0.6 crashes)")
                self.result.error = "600 without data"
                return False
            expected_md5 = str(go_struct(response.data, _FINISH_DATA)["md5"])
        self.writes.put_nowait(_LAST)
        if self._writer is not None:
            await self._writer
        if self._reports:
            # Let in-flight piece reports land so tests see a settled supernode state.
            await asyncio.wait(set(self._reports), timeout=10)
        if self.file is None:
            return True
        self.file.close()
        # In a thread: hashing the whole file on the loop would hold up every other emulated client.
        if expected_md5 and await asyncio.to_thread(file_digest, self.data_file, "md5") != expected_md5:
            # Both 0.4.x and 1.0.x leave the file unmoved and still exit 0 (§8.6).
            self.result.md5_mismatch = True
            self.result.error = "md5 mismatch at finish"
            return False
        place_file(self.data_file, self.cfg.output, keep_src=self.p2p_pattern)
        return True

    async def _shutdown(self) -> None:
        """Abandon what is still in flight, as the exiting dfget process would."""
        pending: list[asyncio.Task[None] | asyncio.Task[object]] = [*self._downloads, *self._reports]
        if self._writer is not None and not self._writer.done():
            pending.append(self._writer)
        for job in pending:
            job.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.file is not None:
            self.file.close()
