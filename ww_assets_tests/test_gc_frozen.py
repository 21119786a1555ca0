"""`gc_frozen`: a step's long-lived objects stay out of full collections, and only meanwhile."""

from __future__ import annotations

import gc
import weakref

import pytest

from ww_assets.gc_frozen import gc_frozen


class _Node:
    def __init__(self) -> None:
        self.itself = self


def test_objects_alive_on_entry_are_collected_only_after_exit() -> None:
    assert gc.get_freeze_count() == 0
    node = _Node()  # a cycle: only the garbage collector frees it
    dropped = weakref.ref(node)
    with gc_frozen():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert dropped() is not None, "a frozen object was collected"
        fresh = _Node()
        fresh_ref = weakref.ref(fresh)
        del fresh
        gc.collect()
        assert fresh_ref() is None, "objects made inside are collected as usual"
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert dropped() is None


def test_an_error_inside_unfreezes_too() -> None:
    with pytest.raises(RuntimeError), gc_frozen():
        raise RuntimeError("step failed")
    assert gc.get_freeze_count() == 0
