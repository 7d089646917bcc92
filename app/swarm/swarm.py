"""Run N emulated dfgets at once, each with its own peer server on an ephemeral loopback port.

Uploaders stay up until every peer is done (finished peers keep serving the others, as real dfget
peer servers do), then ``stop()`` sends service/down for each, like their idle shutdown would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.swarm.api import make_http_client
from app.swarm.client import Dfget
from app.swarm.result import DfgetResult
from app.swarm.uploader import Uploader


def rotated(nodes: Sequence[str], shift: int) -> list[str]:
    """Peer ``i`` lists the nodes starting at ``i mod len``: registrations alternate between replicas."""
    if not nodes:
        return []
    k = shift % len(nodes)
    return [*nodes[k:], *nodes[:k]]


def loopback_ip(index: int) -> str:
    """Distinct 127/8 addresses (Linux routes all of them to lo), like the 127.0.0.7-9 capture."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


@dataclass
class SwarmPeer:
    index: int
    dfget: Dfget
    uploader: Uploader | None
    result: DfgetResult | None = None


class Swarm:
    """``async with Swarm(8, nodes, url, tmp) as swarm: results = await swarm.run()``."""

    def __init__(
        self,
        n: int,
        nodes: Sequence[str],
        url: str,
        out_dir: Path,
        *,
        rotate_nodes: bool = True,
        node_lists: Callable[[int], Sequence[str]] | None = None,
        versions: Sequence[str] = ("0.4.1",),
        distinct_ips: bool = False,
        cdn_pattern: Callable[[int], bool] | None = None,
        start_interval: float = 0.0,
        share_http: bool = False,
        **dfget_kwargs: Any,
    ) -> None:
        self.n = n
        self.nodes = list(nodes)
        self.url = url
        self.out_dir = Path(out_dir)
        self.rotate_nodes = rotate_nodes
        self.node_lists = node_lists
        self.versions = list(versions) or ["0.4.1"]
        self.distinct_ips = distinct_ips
        self.cdn_pattern = cdn_pattern
        self.start_interval = start_interval
        self.share_http = share_http
        self.dfget_kwargs = dfget_kwargs
        self.peers: list[SwarmPeer] = []
        self._http: httpx.AsyncClient | None = None
        self._own_clients: list[httpx.AsyncClient] = []

    def nodes_for(self, index: int) -> list[str]:
        if self.node_lists is not None:
            return list(self.node_lists(index))
        return rotated(self.nodes, index) if self.rotate_nodes else list(self.nodes)

    def output_for(self, index: int) -> Path:
        return self.out_dir / f"peer{index}.bin"

    async def start(self) -> Swarm:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.share_http:
            self._http = make_http_client(max_connections=max(256, 8 * self.n))
        for index in range(self.n):
            version = self.versions[index % len(self.versions)]
            ip = loopback_ip(index) if self.distinct_ips else "127.0.0.1"
            uploader: Uploader | None = None
            if self.cdn_pattern is None or not self.cdn_pattern(index):
                uploader = await Uploader(ip, version=version, http=self._http).start()
            http = self._http
            if http is None:
                # One pool per peer, as each real dfget process has, built now rather than in run(): building
                # fifty clients at once (an SSL context each) would hold up the first peers' requests.
                http = make_http_client()
                self._own_clients.append(http)
            dfget = Dfget(
                self.nodes_for(index),
                self.url,
                self.output_for(index),
                uploader=uploader,
                version=version,
                ip=ip,
                http=http,
                **self.dfget_kwargs,
            )
            self.peers.append(SwarmPeer(index, dfget, uploader))
        return self

    async def run(self) -> list[DfgetResult]:
        async def one(peer: SwarmPeer) -> DfgetResult:
            if self.start_interval:
                await asyncio.sleep(peer.index * self.start_interval)
            peer.result = await peer.dfget.run()
            return peer.result

        return list(await asyncio.gather(*(one(peer) for peer in self.peers)))

    async def stop(self, *, notify: bool = True, delete_files: bool = True) -> None:
        await asyncio.gather(
            *(
                peer.uploader.stop(notify=notify, delete_files=delete_files)
                for peer in self.peers
                if peer.uploader is not None
            )
        )
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await asyncio.gather(*(client.aclose() for client in self._own_clients))
        self._own_clients.clear()

    async def __aenter__(self) -> Swarm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_swarm(n: int, nodes: Sequence[str], url: str, out_dir: Path, **options: Any) -> list[DfgetResult]:
    """Start, run and stop a swarm in one call (service/down is sent at the end)."""
    async with Swarm(n, nodes, url, out_dir, **options) as swarm:
        return await swarm.run()
