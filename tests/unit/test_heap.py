"""Freezing the startup heap: garbage is freed first, survivors leave the collector's walk."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from flashorder.entrypoints.heap import THRESHOLDS, freeze_startup_heap


class _Node:
    me: _Node


@pytest.fixture
def thawed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    # Back into the generations: this test process goes on making and dropping objects.
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("thawed")
def test_a_garbage_cycle_is_freed_not_frozen_and_live_objects_are_exempted() -> None:
    kept = _Node()
    kept.me = kept
    lost = _Node()
    lost.me = lost
    lost_ref = weakref.ref(lost)
    del lost
    gc.disable()  # no collection of its own between here and the freeze
    try:
        assert lost_ref() is not None, "only a collection frees a cycle"
        frozen = freeze_startup_heap()
    finally:
        gc.enable()
    assert lost_ref() is None
    assert frozen == gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects()), "a full collection no longer walks it"
    gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())


@pytest.mark.usefixtures("thawed")
def test_after_the_freeze_young_collections_wait_for_10_000_new_objects() -> None:
    gc.set_threshold(700, 10, 10)  # Python's defaults
    freeze_startup_heap()
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] >= 10_000
    collections = gc.get_stats()[0]["collections"]
    kept: list[list[int]] = [[] for _ in range(5_000)]  # 5,000 new containers, all alive
    assert gc.get_stats()[0]["collections"] == collections, "no young collection for them"
    assert len(kept) == 5_000
