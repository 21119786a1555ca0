"""Keeping CPython's full garbage collections off a step's long-lived objects."""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Objects alive on entry are left out of garbage collections until exit.

    A run worker holds ~240k objects of Dagster, the instance and the code location, which
    every full collection walks (0.1 s each here); a step allocates enough to trigger them:
    a batch read through pymssql (or the emulator's Python path) is one tuple per row, each
    check evaluation makes Dagster's event objects.
    Exit unfreezes everything (so it does not nest), and what has become garbage meanwhile is
    collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
