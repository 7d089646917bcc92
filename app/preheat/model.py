"""The preheat job model: what was asked (:class:`PreheatRequest`) and what happened (:class:`PreheatRecord`).

One record per preheat id in Redis (``df:preheat:<id>``, see app.state.schema). The id is the legacy
supernode's (PROTOCOL §13.1), so a repeated create of the same URL finds the same record; an Open API
job (integer id) points at one of these records.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from app.protocol.taskid import filter_url_params, task_id


class Status:
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"

    FINISHED = frozenset({SUCCESS, FAILED})


TYPES = ("image", "file")
# The legacy supernode's own check (§13.2): scheme, registry host (may carry a path prefix), name, ref.
MANIFEST_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[^/]+(?:/.+?)?)/v2/(?P<name>.+)"
                          r"/manifests/(?P<reference>[^/?#]+)$")


@dataclass(frozen=True)
class PreheatRequest:
    type: str  # "image" or "file"
    url: str
    filter: str = ""  # "&"-separated query parameter names dropped from the task URL (dfget -f)
    identifier: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    platform: str = ""  # "os/arch[/variant]" for image indexes; "" = every platform
    username: str = ""  # registry credentials for the token realm (Open API args, webhook robot)
    password: str = ""
    timeout_seconds: float = 0.0  # 0 = DF_PREHEAT_TIMEOUT_SECONDS
    concurrency: int = 0  # 0 = DF_PREHEAT_JOB_CONCURRENCY

    @property
    def preheat_id(self) -> str:
        """sha256(KEY + filteredURL + identifier [+ Range] + KEY), as the legacy supernode (§13.1).

        An image preheat limited to one platform is a different job from the all-platform one, so the
        platform joins the identifier then (an all-platform preheat keeps the legacy id).
        """
        sign = self.identifier
        if self.type == "image" and self.platform:
            sign = f"{sign}#platform={self.platform}"
        return task_id(filter_url_params(self.url, self.filter.split("&")), identifier=sign, headers=self.headers)

    def to_fields(self) -> dict[str, str]:
        """Flat strings for the Redis hash."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            out[name] = orjson.dumps(value).decode() if isinstance(value, dict) else str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> PreheatRequest:
        return cls(
            type=raw.get("type", "image"),
            url=raw.get("url", ""),
            filter=raw.get("filter", ""),
            identifier=raw.get("identifier", ""),
            headers=orjson.loads(raw.get("headers") or "{}"),
            platform=raw.get("platform", ""),
            username=raw.get("username", ""),
            password=raw.get("password", ""),
            timeout_seconds=float(raw.get("timeout_seconds") or 0),
            concurrency=int(raw.get("concurrency") or 0),
        )


@dataclass
class LayerProgress:
    """One blob (or the file) of a preheat: its seed task and how far it got."""

    url: str
    tid: str
    digest: str = ""
    state: str = Status.WAITING
    bytes: int = 0  # seeded so far
    total: int = -1  # -1 until known
    error: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LayerProgress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class PreheatRecord:
    id: str
    request: PreheatRequest
    status: str
    error: str
    start_ms: int
    finish_ms: int
    updated_ms: int
    epoch: int
    lease_ms: int
    actor: str
    origin: str  # "legacy", "oapi", "webhook"
    layers: tuple[LayerProgress, ...]

    @property
    def finished(self) -> bool:
        return self.status in Status.FINISHED

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> PreheatRecord:
        layers = orjson.loads(raw.get("layers") or "[]")
        return cls(
            id=raw.get("id", ""),
            request=PreheatRequest.from_fields(raw),
            status=raw.get("status", Status.WAITING),
            error=raw.get("errorMsg", ""),
            start_ms=int(raw.get("startMs") or 0),
            finish_ms=int(raw.get("finishMs") or 0),
            updated_ms=int(raw.get("updatedMs") or 0),
            epoch=int(raw.get("epoch") or 0),
            lease_ms=int(raw.get("lease") or 0),
            actor=raw.get("actor", ""),
            origin=raw.get("origin", ""),
            layers=tuple(LayerProgress.from_dict(item) for item in layers if isinstance(item, dict)),
        )
