"""Loads the Lua scripts of ``app/state/lua`` (each prefixed with the shared prelude; the seed_*
scripts also with ``_seed.lua``, the seeder-ownership check they share; those writing the peer list
with ``_peers.lua``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_LUA_DIR = Path(__file__).parent / "lua"
_PEER_WRITERS = {"register", "peer_record"}


@cache
def script_source(name: str) -> str:
    parts = ["_prelude", *(["_seed"] if name.startswith("seed_") else []),
             *(["_peers"] if name in _PEER_WRITERS else []), name]
    return "\n".join((_LUA_DIR / f"{part}.lua").read_text() for part in parts)
