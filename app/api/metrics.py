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

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info

_NS, _SUB = "dragonfly", "supernode"
_DURATION_BUCKETS = (0.1, 0.2, 0.4, 1, 3, 8, 20, 60, 120)
_SIZE_BUCKETS = tuple(100.0 * 10**i for i in range(8))  # Go's ExponentialBuckets(100, 10, 8)

build_info = Gauge(
    "build_info", "A metric with a constant '1' value labeled by version, revision, os, arch and goversion.",
    ["version", "revision", "os", "arch", "goversion"], namespace=_NS, subsystem=_SUB,
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
response_size = Histogram(
    "http_response_size_bytes", "Histogram of response size for HTTP requests.", ["handler"],
    namespace=_NS, subsystem=_SUB, buckets=_SIZE_BUCKETS,
)


def _content_length(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def record(info: Info) -> None:
    handler = info.modified_handler
    requests_total.labels(info.modified_status, handler).inc()
    request_duration.labels(handler).observe(info.modified_duration)
    request_size.labels(handler).observe(_content_length(info.request.headers.get("content-length")))
    sent = info.response.headers.get("content-length") if info.response is not None else None
    response_size.labels(handler).observe(_content_length(sent))


def instrument(app: FastAPI, version: str) -> None:
    """Record every request (``handler`` = the route template, ``none`` for unknown paths) and serve
    ``/metrics``. Call it before adding the middlewares that rewrite the path (the /v1 prefix), so the
    handler label is the route the request reached."""
    # goversion: the label stays for queries that group by it; there is no Go, so it names the runtime.
    build_info.labels(version, "", sys.platform, platform.machine(), f"python{platform.python_version()}").set(1)
    instrumentator = Instrumentator(should_group_status_codes=False, excluded_handlers=["/metrics"])
    instrumentator.add(record)
    instrumentator.instrument(app).expose(app, include_in_schema=False)
