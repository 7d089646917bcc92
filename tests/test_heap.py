"""app.server.heap: a started process's objects leave the collector's sight, young collections are rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.server import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_what_exists_and_still_collects_new_cycles(restored_gc: None) -> None:
    before = len(gc.get_objects())
    heap.settle()
    assert gc.get_freeze_count() >= before // 2  # the process's objects are out of sight now
    assert len(gc.get_objects()) < before // 2
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    made = [Node() for _ in range(1000)]
    del made
    assert gc.collect() >= 1000  # garbage made after settle() is still found
