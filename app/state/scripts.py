"""Loads the Lua scripts of ``app/state/lua`` (each prefixed with the shared prelude; the seed_*
scripts also with ``_seed.lua``, the seeder-ownership check they share; those writing the peer list
with ``_peers.lua``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

_LUA_DIR = Path(__file__).parent / "lua"
_PEER_WRITERS = {"register", "peer_record"}


@cache
def script_source(name: str) -> str:
    parts = ["_prelude", *(["_seed"] if name.startswith("seed_") else []),
             *(["_peers"] if name in _PEER_WRITERS else []), name]
    return "\n".join((_LUA_DIR / f"{part}.lua").read_text() for part in parts)


class Script:
    """A Lua script called by its sha1, loaded on the first NOSCRIPT; the same call as redis-py's
    ``AsyncScript`` (``await script(keys=[...], args=[...])``), without its per-call costs on dfget's hot
    path: a ``typing.Protocol`` isinstance check and tuple copies that were 8 % of a replica's CPU in
    benchmarks/bench_control_plane.py's profile."""

    __slots__ = ("redis", "sha", "source")

    def __init__(self, redis: Any, source: str) -> None:
        self.redis = redis  # a redis-py asyncio client: plain, Sentinel or Cluster
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int | float | bytes]) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or failed-over Redis, or the first call: load it, once
            self.sha = await self.redis.script_load(self.source)
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
