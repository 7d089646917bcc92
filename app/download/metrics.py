"""Optional Prometheus counters; the server works the same when prometheus_client is absent."""

from __future__ import annotations

from typing import Any

try:
    import prometheus_client
except ImportError:  # pragma: no cover - depends on the environment
    prometheus_client = None  # type: ignore[assignment]

_requests: Any = None
_bytes: Any = None
if prometheus_client is not None:
    _requests = prometheus_client.Counter(
        "dragonfly_supernode_download_requests_total",
        "Requests answered by the piece download server, by HTTP status.",
        ["code"],
    )
    _bytes = prometheus_client.Counter(
        "dragonfly_supernode_download_bytes_total",
        "Body bytes handed to the kernel by the piece download server.",
    )


def available() -> bool:
    return prometheus_client is not None


def record(status: int, body_bytes: int) -> None:
    if _requests is None:
        return
    _requests.labels(code=str(status)).inc()
    if body_bytes:
        _bytes.inc(body_bytes)


def exposition() -> tuple[bytes, str]:
    """Body and content type for ``GET /metrics`` (standalone mode has no other exporter)."""
    if prometheus_client is None:
        return b"", "text/plain"
    from app.observability.exposition import exposition as merged  # every worker's series (DF_WORKERS)

    return merged()
