"""Stream entry -> table row. Tolerant on purpose: one malformed entry must not stall the whole log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from app.core.masking import mask_text, mask_value

INVALID_ACTION = "audit.invalid"
_TEXT_FIELDS = ("actor", "action", "outcome", "task_id", "target", "source_ip")


def _clean(value: Any) -> Any:
    """Postgres text and JSONB refuse NUL characters; a URL carrying one would block the batch forever."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _entry_time(entry_id: str) -> datetime:
    """A stream id starts with the Unix ms at which Redis appended the entry."""
    return datetime.fromtimestamp(int(entry_id.partition("-")[0]) / 1000, UTC)


def to_row(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    try:
        data = orjson.loads(fields["event"])
        if not isinstance(data, dict):
            raise TypeError("event is not an object")
        detail = data.get("detail") or {}
        row: dict[str, Any] = {
            "stream_id": entry_id,
            "at": datetime.fromtimestamp(int(data["at_ms"]) / 1000, UTC),
            "outcome": "ok",
            **{name: str(data.get(name) or "") for name in _TEXT_FIELDS if data.get(name) is not None},
            "detail": mask_value(detail if isinstance(detail, dict) else {"value": detail}),
        }
        row["target"] = mask_text(row.get("target", ""))  # also entries buffered by an older version
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        # Kept rather than dropped: the row says something unreadable was recorded, and when.
        row = {
            "stream_id": entry_id, "at": _entry_time(entry_id), "action": INVALID_ACTION, "outcome": "failed",
            "detail": {"raw": orjson.dumps(fields).decode()[:4000]},
        }
    for name in _TEXT_FIELDS:
        row.setdefault(name, "")
    cleaned: dict[str, Any] = _clean(row)
    return cleaned
