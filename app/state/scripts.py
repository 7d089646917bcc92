"""Loads the Lua scripts of ``app/state/lua`` (each prefixed with the shared prelude)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_LUA_DIR = Path(__file__).parent / "lua"


@cache
def script_source(name: str) -> str:
    prelude = (_LUA_DIR / "_prelude.lua").read_text()
    return prelude + "\n" + (_LUA_DIR / f"{name}.lua").read_text()
