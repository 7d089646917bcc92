"""Python's cyclic garbage collector in a serving process.

A replica's process holds about 250,000 objects once it has started (FastAPI, pydantic, redis-py and
their modules), and each full collection walked them all: under a 1,000-peer swarm a full collection
ran every one to two seconds, took 0.2–0.35 s of a worker's CPU each and stalled every request on
that loop meanwhile, a third of the replica's CPU (benchmarks/RESULTS.md, 2026-12-02). None of those
objects is ever garbage, so they are moved out of the collector's sight once the server has started,
as CPython's ``gc.freeze`` is meant for. The youngest generation is collected after 20,000 new
objects instead of 700: a request's objects are short-lived, and most of them are gone by then
instead of being promoted, which is what made full collections so frequent.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("app.server.heap")

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Once startup is over: what exists now stays out of every later collection."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.info("%d objects of the started process moved out of the garbage collector's sight", gc.get_freeze_count())
