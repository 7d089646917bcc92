"""Request bodies of the legacy REST API, read as Go read them."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import HTTPException


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object with lower-cased keys: Go matches keys case-insensitively (PROTOCOL §2.3), so
    ``ip`` and ``IP`` are the same field. Anything else is a 400."""
    try:
        loaded = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(loaded, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return {str(key).lower(): value for key, value in loaded.items()}


def _spellings(name: str) -> list[str]:
    spellings = [""]
    for char in name:
        spellings = [done + variant for done in spellings for variant in dict.fromkeys((char.lower(), char.upper()))]
    return spellings


def any_case(schema: dict[str, Any], spelled_required: bool = True) -> dict[str, Any]:
    """An object schema whose named properties match in any letter case, as the route reads them: each
    property is also a ``patternProperties`` entry (``ip`` → ``^[Ii][Pp]$``), so that ``"PORT": "x"``
    is as invalid in the document as it is to the server; and a required property is present in any
    spelling (``{"ip": ..}`` satisfies ``IP``)."""
    patterns = {
        "^" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in name) + "$": sub
        for name, sub in schema.get("properties", {}).items()
    }
    if not spelled_required:  # nested alternatives are more than schemathesis can generate from
        return {**schema, "patternProperties": patterns}
    result = {key: value for key, value in schema.items() if key != "required"}
    required = [{"anyOf": [{"required": [spelling]} for spelling in _spellings(name)]}
                for name in schema.get("required", ())]
    if required:
        result["allOf"] = [*schema.get("allOf", ()), *required]
    return {**result, "patternProperties": patterns}
