"""Shapes of ``GET /api/v1/cluster`` (ours: no Go counterpart)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Replica(BaseModel):
    id: str = Field(description="hostname-pid-port")
    hostName: str
    pid: int = Field(description="The replica's main process (its supervisor with DF_WORKERS > 1)")
    workers: int = Field(1, description="Processes serving the replica's ports (DF_WORKERS)")
    advertiseIp: str
    listen: str
    port: int
    downloadPort: int
    version: str
    mode: str
    started: str = Field(description="RFC3339 ms")
    heartbeat: str = Field(description="Last heartbeat, RFC3339 ms")
    self: bool = Field(False, description="The replica that answered this request.")


class Workers(BaseModel):
    mode: str = Field(description="celery (DF_BROKER_URL set) or in-process (embedded seeding)")
    ok: bool
    workers: list[str] = Field(default_factory=list, description="Celery workers that answered a ping.")
    runningSeeds: int = Field(0, description="Tasks whose seed job is RUNNING (cluster-wide).")
    error: str | None = None


class RedisHealth(BaseModel):
    ok: bool
    latencyMs: float | None = None
    usedMemoryBytes: int | None = None
    usedMemoryHuman: str | None = None
    embedded: bool = False
    error: str | None = None


class DatabaseHealth(BaseModel):
    """The audit database: Postgres (DF_DATABASE_URL) or, in embedded mode, the SQLite file under DF_HOME."""

    status: str = Field(
        description="ok (Postgres answers), sqlite (the embedded file answers), error, "
        "not configured (cluster mode without DF_DATABASE_URL)"
    )
    ok: bool | None = None
    latencyMs: float | None = None
    url: str | None = Field(None, description="The database URL without its password.")
    error: str | None = None


class SeedCache(BaseModel):
    path: str
    usedBytes: int = Field(description="Bytes held by seed files.")
    freeBytes: int = Field(description="Free bytes on the seed cache's filesystem.")
    totalBytes: int = Field(description="Size of that filesystem.")


class ClusterView(BaseModel):
    replicas: list[Replica]
    workers: Workers
    redis: RedisHealth
    database: DatabaseHealth
    seedCache: SeedCache
