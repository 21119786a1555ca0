"""Fetching a source's next items in a thread while the caller works on the current one.

A partition's copy alternates between the historian's fetch (pymssql, or the emulator's SQLite
reads: Python work) and the caller's clip and ClickHouse insert (chDB releases the GIL while it
inserts). `ReadAhead` lets the two overlap, and `ReadsAhead` carries that across the
partitions of a run: the next partition's read starts as soon as the current one has been
fetched whole, while its last rows are still being inserted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

READ_AHEAD_ITEMS = 2
"""Items fetched ahead of the caller: memory holds at most this many more batches."""

_END = object()
_POLL_S = 0.1


class ReadAhead(Iterator[T]):
    """`items` in order, fetched by a worker thread (started at once) up to `depth` items
    ahead of the caller.

    The source is iterated, and closed, only in the worker thread (a database connection it
    opens stays in the thread that opened it). An exception of the source is raised to the
    caller where the item would have been. `on_end` runs in the worker once the source is
    exhausted, before the caller sees the end. `close()` (also on leaving a `with` block, or
    when the caller drops the iterator) stops the worker after its current fetch and closes
    the source.
    """

    def __init__(
        self,
        items: Iterable[T],
        depth: int = READ_AHEAD_ITEMS,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._stop = threading.Event()
        if depth < 1:
            raise ValueError(f"read-ahead depth must be positive, got {depth}")
        self._slots: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(depth)
        self._done = False
        self._worker = threading.Thread(
            target=_fetch, args=(items, self._slots, self._stop, on_end), name="read-ahead",
            daemon=True,
        )  # fmt: skip
        self._worker.start()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item, error = self._slots.get()
        if error is not None or item is _END:
            self.close()
            if error is not None:
                raise error
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._worker.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()  # a dropped reader's worker stops at its next item


def _fetch(
    items: Iterable[T],
    slots: queue.Queue[tuple[object, BaseException | None]],
    stop: threading.Event,
    on_end: Callable[[], None] | None,
) -> None:
    def offer(item: object, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                slots.put((item, error), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    source = iter(items)
    try:
        for item in source:
            if not offer(item):
                return
        if on_end is not None:
            on_end()
        offer(_END)
    except BaseException as error:  # handed to the caller, raised there
        offer(_END, error)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


class ReadsAhead(Generic[T]):
    """Consecutive reads (a run's partitions), each a `ReadAhead`; read i + 1 starts when read
    i has been fetched whole, so the source is never idle between two partitions and only
    one read runs at a time. At most one read runs ahead of the one the caller holds: a read
    started ahead that ends before the caller takes it starts the next only once taken, so
    every read is opened once. `read(i)` again (a retry) first stops a read started ahead."""

    def __init__(self, opens: Sequence[Callable[[], Iterable[T]]], depth: int = READ_AHEAD_ITEMS):
        self._opens, self._depth = opens, depth
        self._lock = threading.Lock()
        self._ahead: tuple[int, ReadAhead[T]] | None = None
        self._ended_ahead = False
        """Whether the read started ahead has been fetched whole (its successor waits)."""

    def read(self, index: int) -> ReadAhead[T]:
        with self._lock:
            ahead, self._ahead = self._ahead, None
            ended, self._ended_ahead = self._ended_ahead, False
        if ahead is not None:
            if ahead[0] == index:
                if ended:
                    self._begin(index + 1)
                return ahead[1]
            ahead[1].close()
        return self._start(index)

    def _start(self, index: int) -> ReadAhead[T]:
        last = index + 1 >= len(self._opens)
        return ReadAhead(
            self._opens[index](), self._depth, None if last else lambda: self._fetched(index)
        )

    def _fetched(self, index: int) -> None:
        """Read `index` is fetched whole: start the next one, unless `index` itself is the
        read started ahead and not taken yet (then `read(index)` starts it)."""
        with self._lock:
            if self._ahead is not None and self._ahead[0] == index:
                self._ended_ahead = True
                return
        self._begin(index + 1)

    def _begin(self, index: int) -> None:
        if index >= len(self._opens):
            return
        with self._lock:  # held while it starts: its `_fetched` must find it ahead
            replaced, self._ahead = self._ahead, (index, self._start(index))
            self._ended_ahead = False
        if replaced is not None:  # a retry raced the read it replaced: never two ahead
            replaced[1].close()

    def close(self) -> None:
        """Stop a read started ahead and not taken (the run ended or failed before it)."""
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].close()

    def __enter__(self) -> ReadsAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
