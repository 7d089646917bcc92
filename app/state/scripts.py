"""Loads the Lua scripts of ``app/state/lua`` (each prefixed with the shared prelude; the seed_*
scripts also with ``_seed.lua``, the seeder-ownership check they share)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_LUA_DIR = Path(__file__).parent / "lua"


@cache
def script_source(name: str) -> str:
    parts = ["_prelude", *(["_seed"] if name.startswith("seed_") else []), name]
    return "\n".join((_LUA_DIR / f"{part}.lua").read_text() for part in parts)
