"""[1.0.x] ``POST /task/metrics`` bodies (PROTOCOL §6.1): what a finished download reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.protocol.wire import lower_keys

# backsourceReason >= 1000: back-source was refused (--notbs), nothing came from the origin (§8.8).
_REFUSED = 1000
_MAX_LENGTH = 1 << 50  # far above any real file; a larger count is garbage, not traffic


@dataclass(frozen=True)
class TaskMetricsReport:
    task_id: str
    cid: str
    file_length: int
    success: bool
    backsource_reason: int

    @property
    def back_sourced(self) -> bool:
        """The file came from the origin: a successful download with a back-source reason below 1000."""
        return self.success and 0 < self.backsource_reason < _REFUSED and self.file_length > 0 and bool(
            self.task_id and self.cid
        )


def parse_task_metrics(body: bytes) -> TaskMetricsReport | None:
    """The report, or None for a body that is not one (Go decodes keys case-insensitively)."""
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    data = lower_keys(raw)
    try:
        reason = int(str(data.get("backsourcereason") or "0"))
        length = data.get("filelength") or 0
        if isinstance(length, bool) or not isinstance(length, int | float) or not 0 <= length <= _MAX_LENGTH:
            return None
        task_id, cid, success = data.get("taskid", ""), data.get("cid", ""), data.get("success", False)
    except ValueError:
        return None
    if not isinstance(task_id, str) or not isinstance(cid, str) or not isinstance(success, bool):
        return None
    return TaskMetricsReport(task_id[:200], cid[:200], int(length), success, reason)
