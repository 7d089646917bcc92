"""All configuration, from environment variables prefixed ``DF_``.

Embedded mode (no ``DF_REDIS_URL``) runs the very same state code against an
in-process Redis-compatible server, and seeds in-process instead of in Celery.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.bridge.peer_ip import parse_trusted
from app.core import cluster_url, sentinel_url
from app.core.cpus import available_cpus


def _first_non_loopback_ipv4() -> str:
    """Mirror the Go supernode's default advertise IP: the first non-loopback address."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # A UDP "connect" sends nothing; it only asks the kernel for a route.
            probe.connect(("10.254.254.254", 1))
            address: str = probe.getsockname()[0]
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DF_", env_file=None, extra="ignore")

    # --- listeners -------------------------------------------------------------------------
    listen: str = Field("127.0.0.1", description="Bind address for both ports.")
    port: int = Field(8002, description="dfget-facing API port.")
    download_port: int = Field(8001, description="Piece (framed file) download port, nginx in the original.")
    advertise_ip: str = Field("", description="IP peers use for the CDN peer; the VIP behind a load balancer.")
    advertise_download_port: int = Field(
        0, ge=0, le=65535,
        description="Piece port peers are sent to (the VIP's, e.g. a Service port); 0 = DF_DOWNLOAD_PORT.",
    )

    # --- backing services ------------------------------------------------------------------
    redis_url: str = Field(
        "", description="redis://, rediss://, redis+sentinel:// or redis+cluster://; empty = embedded."
    )
    redis_sentinel_master: str = Field("mymaster", description="Master for redis+sentinel:// URLs without ?master=.")
    # Every in-flight request holds one connection for its script. redis-py's default pool fails at once
    # beyond 100; a swarm of a few hundred dfgets hitting one replica must queue instead.
    redis_max_connections: int = Field(512, ge=1, description="Redis connections per process, at most.")
    redis_pool_timeout_seconds: float = Field(
        2.0, gt=0, description="How long a request waits for a free Redis connection before failing."
    )
    # Without them a command on a connection to a paused or partitioned Redis hangs forever. Our scripts
    # take milliseconds; a reply 2 s late means Redis is away, and the handlers then answer dfget in time.
    redis_socket_timeout_seconds: float = Field(
        2.0, gt=0, description="How long a Redis command (or a sentinel query) may wait for its reply."
    )
    redis_connect_timeout_seconds: float = Field(
        1.0, gt=0, description="How long opening a connection to Redis or to a sentinel may take."
    )
    broker_url: str = Field(
        "", description="Celery broker: redis://, rediss://, redis+sentinel:// (as DF_REDIS_URL); empty = in-process."
    )
    database_url: str = Field("", description="Audit log database (SQLAlchemy async URL).")
    seed_dir: Path | None = Field(None, description="Shared seed cache directory (RWX volume in Kubernetes).")
    home: Path = Field(Path(".dfhome"), description="Data directory in embedded mode.")

    # --- scheduling limits (PROTOCOL §11.4) -----------------------------------------------
    peer_down_limit: int = Field(4, ge=1, description="Max concurrent pieces a client downloads.")
    peer_up_limit: int = Field(5, ge=1, description="Max concurrent uploads handed to one peer.")
    cdn_load_limit: int = Field(4, ge=1, description="Max concurrent pieces from the CDN per task.")
    fail_count_limit: int = Field(5, ge=0, description="Client errors before it is served by the CDN only.")
    elimination_limit: int = Field(5, ge=1, description="Serving errors before a holder is dropped.")
    # 8, not 16: a pull's Redis work grows with window × sample; 8 holders cut the server's CPU for a swarm
    # by 9-11 % (200 and 1,000 peers), with the same share from peers and no more migrations. A window of 8
    # saved more at 200 peers but cost migrations at 1,000 (benchmarks/RESULTS.md, 2026-12-03).
    holder_sample: int = Field(8, ge=1, description="Holders sampled per piece when scheduling.")
    pull_window_pieces: int = Field(
        32, ge=1,
        description="Pieces a pull considers at most, the rarest first (bounds its cost on large files); never "
        "fewer than twice the client's download limit.",
    )
    piece_lease_seconds: float = Field(
        120.0, gt=0, description="A handed-out piece that is not reported within this time is re-offered."
    )
    reoffer_lease_seconds: float = Field(
        5.0, gt=0,
        description="Lease of a piece re-offered to a client that was running it when it re-registered.",
    )
    # A lost report must not block a piece for a whole lease: once the task has a few finished pieces,
    # a lease is a few times its observed piece time (never below the floor, never above the lease).
    piece_lease_floor_seconds: float = Field(
        5.0, gt=0, description="Shortest lease of a handed-out piece once the task's piece time is known."
    )
    piece_lease_factor: float = Field(
        3.0, ge=1, description="Lease = this many times the task's observed piece time (within floor and lease)."
    )
    down_link_kib: int = Field(
        0, ge=0, description="downLink in piece tasks (KiB/s); 0 like Go, 20480 lifts 0.4.x's 10 MiB/s cap."
    )
    seed_upload_kibps: int = Field(
        0, ge=0, description="Total seed-cache upload bandwidth (KiB/s) shared by the live replicas; 0 = unlimited."
    )
    limits_cache_seconds: float = Field(
        1.0, gt=0, le=30, description="How long a replica uses the live limits (PUT /api/v1/limits) it last read."
    )

    # --- lifetimes (PROTOCOL §11.7) -------------------------------------------------------
    task_ttl_seconds: int = Field(1800, ge=10, description="Idle time after which task state expires.")
    fail_access_seconds: int = Field(180, ge=0, description="Negative cache after a source 404.")
    seed_lease_seconds: float = Field(30.0, gt=1, description="A seeder silent for this long is replaced.")
    seed_retry_seconds: float = Field(5.0, ge=0, description="Wait before a failed seed is retried.")
    seed_worker_nice: int = Field(
        0, ge=0, le=19,
        description="CPU niceness a seed worker takes at start (never lowered); 19 on a host shared with replicas.",
    )
    gc_interval_seconds: float = Field(15.0, gt=0, description="How often the seed-cache disk GC runs.")
    gc_young_free_bytes: int = Field(100 << 30, ge=0, description="Below this much free disk, idle seeds go.")
    gc_full_free_bytes: int = Field(5 << 30, ge=0, description="Below this, every seed without task state goes.")
    gc_clean_ratio: float = Field(0.1, gt=0, le=1, description="Share of idle seeds one young GC deletes.")
    # Operators size caches in % of a volume (legacy #986, #1096). Both forms may be set: the threshold in
    # force is the larger free-space requirement of the two, so adding a % never makes the GC lazier.
    gc_young_free_percent: float = Field(
        0.0, ge=0, le=100,
        description="Young GC below this % of the seed volume free (0 = off); the larger of it and the bytes wins.",
    )
    gc_full_free_percent: float = Field(
        0.0, ge=0, le=100,
        description="Full GC below this % of the seed volume free (0 = off); the larger of it and the bytes wins.",
    )
    gc_preheat_pin_seconds: int = Field(
        86400, ge=0, description="A preheated seed is never evicted by the disk GC for this long (0 = no pin)."
    )

    # --- source access --------------------------------------------------------------------
    probe_timeout_seconds: float = Field(4.0, gt=0, description="Length probe timeout at registration.")
    source_connect_timeout_seconds: float = Field(3.0, gt=0, description="Connect timeout to the source.")
    source_read_timeout_seconds: float = Field(60.0, gt=0, description="Read timeout while seeding.")

    # --- availability: Redis outages and graceful drain -------------------------------------
    register_hold_seconds: float = Field(
        3.5, gt=0, lt=5,
        description="How long a registration waits out a Redis outage before answering 609 (dfget waits 5 s).",
    )
    pull_hold_seconds: float = Field(
        1.0, gt=0, lt=5, description="How long a pull or report waits out a Redis outage before 602 / buffering."
    )
    replay_buffer_limit: int = Field(
        100_000, ge=100, description="Reports and audit events kept in memory while Redis is unreachable."
    )
    readiness_interval_seconds: float = Field(0.5, gt=0, description="How often /readyz's Redis check runs.")
    workers: int = Field(
        0, ge=0, description="Processes of a replica, sharing its two ports (0 = the CPUs the host or the "
        "container's CPU quota gives it). Embedded mode always runs one.",
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="After SIGTERM: serve on, not ready, this long before closing the listeners."
    )
    shutdown_timeout_seconds: float = Field(
        60.0, gt=0, description="After the drain: how long in-flight requests and piece uploads may take."
    )

    # --- request bounds (the dfget API is unauthenticated: these bound what a client can make us hold)
    max_peer_body_bytes: int = Field(
        128 << 10, ge=4096,
        description="Body bound of /peer/registry and /task/metrics (a registration is a few KiB).",
    )
    max_rest_body_bytes: int = Field(
        512 << 10, ge=4096, description="Body bound of every other route: preheats, the Harbor webhook, the REST API."
    )
    max_header_bytes: int = Field(
        16 << 10, ge=1024, description="Bound of the request line plus headers, on both ports."
    )
    max_headers: int = Field(100, ge=10, description="Most header lines one request may carry, on both ports.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Time a request's line and headers may take, from its first byte, on both ports."
    )
    listen_backlog: int = Field(
        0, ge=0, description="Listen backlog of both ports; 0 = the host's net.core.somaxconn, as Go's net.Listen."
    )
    keepalive_timeout_seconds: float = Field(
        75.0, gt=10, description="An idle connection is closed after this long, on both ports."
    )

    version: str = Field("1.0.6", description="Version reported by /version and to clients.")

    # --- operations surface: auth, policy, Harbor --------------------------------------------
    api_tokens: str = Field("", description="Comma-separated name:token pairs for the admin and preheat APIs.")
    insecure_open_api: bool = Field(False, description="Cluster mode without DF_API_TOKENS: allow an open API.")
    public_read_api: bool = Field(False, description="Read-only REST endpoints need no token.")
    dfget_allowlist: str = Field("", description="Comma-separated CIDRs allowed on the dfget API; empty = all.")
    # A herd's requests all served at once all finish late; in arrival order, the early ones finish early.
    dfget_concurrency: int = Field(
        128, ge=1, description="dfget requests one process works on at once; the others wait, first come first served."
    )
    dfget_queue_seconds: float = Field(
        3.0, gt=0, description="A dfget request that waited this long for its turn is answered 'ask again' (602, 609)."
    )
    peer_ip_check: bool = Field(False, description="A registration's ip must be the address it came from (501 if not).")
    trusted_proxies: str = Field(
        "", description="Comma-separated CIDRs of load balancers whose X-Forwarded-For names the client."
    )
    source_allowlist: str = Field(
        "", description="Comma-separated CIDRs or host[:port] that sources and registries may resolve to."
    )
    source_denylist: str = Field(
        "", description="Comma-separated CIDRs sources may not resolve to (beyond the built-in refusals)."
    )
    harbor_webhook_secret: str = Field("", description="Expected Authorization value of Harbor webhooks.")
    harbor_registry_username: str = Field("", description="Robot account used for webhook-triggered preheats.")
    harbor_registry_password: str = Field("", description="Password of that robot account.")
    harbor_registries: str = Field(
        "", description="Comma-separated registry host[:port] the robot account may be sent to; empty = none."
    )
    harbor_token_realms: str = Field(
        "", description="Comma-separated host[:port] of token realms, beyond those registries' hosts, that get it."
    )
    harbor_registry_scheme: str = Field("https", description="Scheme of the registry named in webhooks.")
    harbor_webhook_max_resources: int = Field(
        50, ge=1, description="Most artifacts one webhook event may preheat; a bigger event is refused (400)."
    )
    preheat_timeout_seconds: float = Field(1800.0, gt=0, description="Whole-job timeout of a preheat.")
    preheat_job_concurrency: int = Field(4, ge=1, description="Layers seeded at once by one preheat job.")
    preheat_cluster_concurrency: int = Field(16, ge=1, description="Preheat seeds running at once cluster-wide.")
    preheat_fail_status: str = Field(
        "FAIL", description="Status a failed preheat shows on /preheats/{id} (every Harbor stops polling on FAIL)."
    )
    replica_heartbeat_seconds: float = Field(5.0, gt=0, description="How often a replica announces itself.")
    gauge_refresh_seconds: float = Field(
        5.0, gt=0, description="How often /metrics' cluster-wide gauges (tasks, seeding, preheats) are recomputed."
    )
    metrics_peer_label: bool = Field(
        False, description="Fill the legacy metrics' `peer` label with the dfget's IP (one series per dfget host: "
        "unbounded cardinality). Off: the label is kept, empty.",
    )
    metrics_task_series: int = Field(
        100, ge=0, le=10_000, description="How many tasks (the most recently used) get per-task byte-split series "
        "on /metrics (`task_served_bytes_total{task,source}`); 0: none.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per log line, with the request id (X-Request-Id).",
    )
    audit_stream_maxlen: int = Field(1_000_000, ge=1000, description="Bound of the audit buffer stream.")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_trusted(value)  # a bad entry fails at startup, not at each registration
        return value

    @model_validator(mode="after")
    def _gc_percents(self) -> Settings:
        # A full GC that starts above the young one would make the young share meaningless.
        if 0 < self.gc_young_free_percent < self.gc_full_free_percent:
            raise ValueError("DF_GC_YOUNG_FREE_PERCENT must be at least DF_GC_FULL_FREE_PERCENT")
        return self

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.advertise_ip:
            self.advertise_ip = _first_non_loopback_ipv4()
        if self.seed_dir is None:
            self.seed_dir = self.home / "repo"
        if cluster_url.is_cluster(self.broker_url):
            raise ValueError("DF_BROKER_URL cannot be a redis+cluster:// URL (Kombu has no Redis Cluster transport):"
                             " set it to a plain or Sentinel Redis, or leave it empty to seed in-process")
        # The workers read the broker URL alone: it must carry the master name the replicas would use.
        self.broker_url = sentinel_url.with_master(self.broker_url, self.redis_sentinel_master)
        return self

    @property
    def tokens(self) -> dict[str, str]:
        """token -> name, from ``name:token`` pairs."""
        pairs = (item.strip() for item in self.api_tokens.split(","))
        return {token: name for name, sep, token in (p.partition(":") for p in pairs if p) if sep and token}

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @property
    def worker_count(self) -> int:
        # Embedded mode keeps one process: its in-process Redis lives there.
        return 1 if self.embedded else self.workers or available_cpus()

    @property
    def seed_path(self) -> Path:
        assert self.seed_dir is not None
        return self.seed_dir

    @property
    def piece_port(self) -> int:
        """The piece port named in piece tasks: where peers reach the seed cache (behind a VIP, its port)."""
        return self.advertise_download_port or self.download_port

    @property
    def cdn_cid_prefix(self) -> str:
        return f"cdnnode:{self.advertise_ip}~"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
