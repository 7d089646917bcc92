"""Plain-HTTP polling for the test harnesses (replica readiness, haproxy stats, registry start).

``httpx.get()`` builds a client per call, and every client loads the CA bundle into a new SSL context:
about 57 ms of CPU each (measured here). A loop polling a starting replica every 0.1 s thus burnt half a
core beside the swarm it was meant to observe, in the same process as the emulator. One client per process,
without keep-alive: a polled server may have been killed since the last call, and a stale pooled
connection would turn one poll into a spurious failure.
"""

from __future__ import annotations

import threading

import httpx

_lock = threading.Lock()
_client: httpx.Client | None = None


def client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
        return _client


def get(url: str, timeout: float) -> httpx.Response:
    return client().get(url, timeout=timeout)
