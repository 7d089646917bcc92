"""The legacy supernode's HTTP metrics, with its exact names, labels and buckets (METRICS-AND-HELM.md
§5), fed by prometheus-fastapi-instrumentator instead of its default set.

Dashboards and alerts written for the Go supernode query ``http_requests_total{code,handler}``; the
instrumentator's defaults would name the label ``status``, group it to ``2xx`` and add two more
histograms per request, which also cost a noticeable share of a replica's CPU on dfget's hot path.
Module-level collectors: the app is built more than once per process in tests, a metric only once.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.requests import Request
from starlette.responses import Response

from app.core.config import Settings
from app.observability import dfget, exposition, local, roundtrips
from app.observability.dfget import ObserverMiddleware

_NS, _SUB = "dragonfly", "supernode"
_DURATION_BUCKETS = (0.1, 0.2, 0.4, 1, 3, 8, 20, 60, 120)
_SIZE_BUCKETS = tuple(100.0 * 10**i for i in range(8))  # Go's ExponentialBuckets(100, 10, 8)

build_info = Gauge(
    "build_info", "A metric with a constant '1' value labeled by version, revision, os, arch and goversion.",
    ["version", "revision", "os", "arch", "goversion"], namespace=_NS, subsystem=_SUB, multiprocess_mode="max",
)
requests_total = Counter(
    "http_requests_total", "Counter of HTTP requests.", ["code", "handler"], namespace=_NS, subsystem=_SUB,
)
request_duration = Histogram(
    "http_request_duration_seconds", "Histogram of latencies for HTTP requests.", ["handler"],
    namespace=_NS, subsystem=_SUB, buckets=_DURATION_BUCKETS,
)
request_size = Histogram(
    "http_request_size_bytes", "Histogram of request size for HTTP requests.", ["handler"],
    namespace=_NS, subsystem=_SUB, buckets=_SIZE_BUCKETS,
)
redis_round_trips = Histogram(
    "redis_round_trips", "Redis round trips (commands, pipelines, script calls) one HTTP request cost this replica.",
    ["handler"], namespace=_NS, subsystem=_SUB, buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100),
)
response_size = Histogram(
    "http_response_size_bytes", "Histogram of response size for HTTP requests.", ["handler"],
    namespace=_NS, subsystem=_SUB, buckets=_SIZE_BUCKETS,
)


def _content_length(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def record_request(
    handler: str, status: str, seconds: float, request_bytes: int, response_bytes: int, trips: int | None
) -> None:
    """One answered request, as the Go supernode's HTTP middleware counted it (``handler`` = the route
    template). Shared by the instrumentator's callback and the dfget fast path (app.api.fastpath)."""
    requests_total.labels(status, handler).inc()
    request_duration.labels(handler).observe(seconds)
    request_size.labels(handler).observe(request_bytes)
    response_size.labels(handler).observe(response_bytes)
    if trips is not None:
        redis_round_trips.labels(handler).observe(trips)


def recorder(peer_label: bool) -> Callable[[Info], None]:
    def record(info: Info) -> None:
        handler = info.modified_handler
        sent = info.response.headers.get("content-length") if info.response is not None else None
        trips = roundtrips.current()
        record_request(
            handler, info.modified_status, info.modified_duration,
            _content_length(info.request.headers.get("content-length")), _content_length(sent),
            None if trips is None else trips.count,
        )
        if handler in dfget.QUERY_HANDLERS:
            dfget.record_query(handler, info.request.query_params, info.modified_duration, peer_label)

    return record


async def _exposition(_request: Request) -> Response:
    # Not the instrumentator's own handler: with DF_WORKERS > 1 it would show the multiprocess series
    # only, without the scrape-time collectors (app.observability.exposition).
    body, content_type = exposition.exposition()
    return Response(body, headers={"content-type": content_type})


def instrument(app: FastAPI, version: str) -> None:
    """Record every request (``handler`` = the route template, ``none`` for unknown paths) and serve
    ``/metrics``. Call it before adding the middlewares that rewrite the path (the /v1 prefix), so the
    handler label is the route the request reached. Reads ``app.state.settings``."""
    settings: Settings = app.state.settings
    # goversion: the label stays for queries that group by it; there is no Go, so it names the runtime.
    build_info.labels(version, "", sys.platform, platform.machine(), f"python{platform.python_version()}").set(1)
    roundtrips.install()
    local.bind(app.state)  # readiness now; the replay buffer once the lifespan made it
    instrumentator = Instrumentator(should_group_status_codes=False, excluded_handlers=["/metrics"])
    instrumentator.add(recorder(settings.metrics_peer_label))
    instrumentator.instrument(app)
    app.add_route("/metrics", _exposition, include_in_schema=False)
    # Outside the instrumentator: its callback reads the round-trip count this middleware starts.
    app.add_middleware(ObserverMiddleware, peer_label=settings.metrics_peer_label,
                       max_body=settings.max_peer_body_bytes)
