"""Timestamps as the Go supernode printed them (strfmt.DateTime: RFC3339, milliseconds, UTC "Z")."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339_ms(ms: int) -> str:
    """``2026-11-28T04:46:37.286Z`` from Unix milliseconds."""
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
