"""ReadAhead: the source's items in order, at most `depth` ahead, its errors raised to the
caller, and the source closed in its own thread however the caller stops; then a partition
copied through it from the emulator (a real SQLite connection, opened in the worker thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest

from bench.data import write_dataset
from ww_assets.emulator import store
from ww_assets.historian import EmulatorHistorian, HistorianError
from ww_assets.historian_meter import MeteredHistorian
from ww_assets.read_ahead import ReadAhead, ReadsAhead


def _read_ahead_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "read-ahead")


class _Source:
    """A generator source that records how far ahead of the caller it ran and how it ended."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.consumed = 0
        self.lead: list[int] = []
        self.closed_in: int | None = None
        self.produced = 0

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise HistorianError(f"historian dropped the connection at item {i}")
                self.lead.append(i - self.consumed)
                self.produced += 1
                yield i
        finally:
            self.closed_in = threading.get_ident()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_items_arrive_in_order_and_never_more_than_depth_ahead(depth: int) -> None:
    source = _Source(40)
    got = []
    for item in ReadAhead(source, depth):
        got.append(item)
        time.sleep(0.002)  # a slow caller: the worker would run ahead if it could
        source.consumed += 1
    assert got == list(range(40))
    # Item i is fetched once the caller holds item i - depth - 1 at the latest: `depth` queued
    # and one in the caller's hands.
    assert max(source.lead) <= depth + 1
    assert source.closed_in not in (None, threading.get_ident())
    assert _read_ahead_threads() == 0


def test_a_source_error_reaches_the_caller_after_the_items_before_it() -> None:
    source = _Source(10, fail_at=3)
    got = []
    with pytest.raises(HistorianError, match="at item 3"):
        for item in ReadAhead(source):
            got.append(item)
    assert got == [0, 1, 2]
    assert _read_ahead_threads() == 0


def test_a_caller_that_stops_early_stops_the_worker_and_closes_the_source() -> None:
    source = _Source(1_000)
    items = ReadAhead(source, depth=2)
    assert next(items) == 0
    items.close()  # what a failed insert or a terminated run does to the generator
    assert source.closed_in is not None and source.closed_in != threading.get_ident()
    assert source.produced <= 4  # the worker stopped instead of reading the rest
    assert _read_ahead_threads() == 0


def test_a_caller_error_midway_leaves_no_worker_behind() -> None:
    source = _Source(1_000)
    with pytest.raises(ZeroDivisionError), ReadAhead(source) as items:
        for item in items:
            if item == 5:
                1 / 0
    assert source.closed_in is not None and source.produced <= 9
    assert _read_ahead_threads() == 0


def test_a_dropped_reader_stops_its_worker() -> None:
    source = _Source(1_000)
    items = ReadAhead(source)
    assert next(items) == 0
    del items  # no close(): the worker notices and closes the source itself
    deadline = time.monotonic() + 5
    while source.closed_in is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.closed_in is not None and source.produced <= 4


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth must be positive"):
        next(ReadAhead([1], depth=0))


class _Reads:
    """Sources 0..n-1 of `items` items each that log when each is opened and closed."""

    def __init__(self, n: int, items: int) -> None:
        self.items, self.log = items, []
        self.open_now = self.most_open = 0
        self.opens = [lambda i=i: self._source(i) for i in range(n)]

    def _source(self, i: int) -> Iterator[tuple[int, int]]:
        self.log.append(("open", i))
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            for j in range(self.items):
                yield (i, j)
        finally:
            self.open_now -= 1
            self.log.append(("closed", i))


def test_reads_run_one_at_a_time_and_the_next_starts_before_it_is_asked_for() -> None:
    sources = _Reads(3, 20)
    got = []
    with ReadsAhead(sources.opens) as reads:
        for i in range(3):
            time.sleep(0.2)  # the caller is still inserting read i - 1's last rows
            sources.log.append(("asked", i))
            with reads.read(i) as items:
                got.extend(items)
    assert got == [(i, j) for i in range(3) for j in range(20)]
    assert sources.most_open == 1
    assert sources.log.index(("closed", 0)) < sources.log.index(("open", 1))
    assert sources.log.index(("open", 1)) < sources.log.index(("asked", 1))  # read ahead
    assert sources.log.index(("open", 2)) < sources.log.index(("asked", 2))
    assert _read_ahead_threads() == 0


def test_a_retried_read_stops_the_read_started_after_it_and_starts_afresh() -> None:
    sources = _Reads(2, 5)
    with ReadsAhead(sources.opens) as reads:
        with reads.read(0) as items:
            assert list(items) == [(0, j) for j in range(5)]  # read 1 starts now
        # The insert of read 0's rows failed: the retry reads 0 again, and read 1 anew after.
        with reads.read(0) as items:
            assert list(items) == [(0, j) for j in range(5)]
        with reads.read(1) as items:
            assert list(items) == [(1, j) for j in range(5)]
    assert sources.most_open == 1
    assert [e for e in sources.log if e[1] == 1] == [("open", 1), ("closed", 1)] * 2
    assert _read_ahead_threads() == 0


def test_a_run_that_ends_early_stops_the_read_started_ahead() -> None:
    sources = _Reads(2, 1_000)
    with ReadsAhead(sources.opens) as reads:
        with reads.read(0) as items:
            list(items)
    assert sources.log[-1] == ("closed", 1) and sources.open_now == 0
    assert _read_ahead_threads() == 0


def test_the_emulator_is_read_through_it_whole_or_abandoned(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    tags = list(write_dataset(path, 4, 1, date(2025, 6, 1), 60_000).tags)
    historian = EmulatorHistorian(path, tag_types=(1, 2, 3), batch_rows=500)
    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    end = datetime(2025, 6, 2, tzinfo=timezone.utc)
    direct = [b.to_pylist() for b in historian.read_history(tags, start, end)]
    ahead = [b.to_pylist() for b in ReadAhead(historian.read_history(tags, start, end))]
    assert len(direct) > 2 and ahead == direct
    # Abandoned after one batch: the SQLite connection, opened in the worker, is closed there.
    items = ReadAhead(historian.read_history(tags, start, end))
    assert 0 < next(items).num_rows <= 500
    items.close()
    assert _read_ahead_threads() == 0


def test_a_range_run_reads_each_partition_once_over_empty_sparse_and_dense_days(
    tmp_path: Path,
) -> None:
    """The historian's reads counted by the meter (a real client wrapper) on the emulator: a
    read started ahead that ends at once (an empty day) must not start, nor replace, the next."""
    path = tmp_path / "historian.sqlite"
    tags = ["Dense.A", "Dense.B", "Sparse.C"]
    first = datetime(2025, 6, 1, tzinfo=timezone.utc)
    kinds = ["empty", "dense", "empty", "empty", "sparse", "empty", "dense", "sparse", "empty"]
    points: list[store.Point] = []
    for day, kind in enumerate(kinds):
        start = first + timedelta(days=day)
        if kind == "dense":
            points += [(t, start + timedelta(seconds=s), float(s), None, 0, 192, 192)
                       for t in tags[:2] for s in range(0, 86_400, 20)]  # fmt: skip
        elif kind == "sparse":
            points += [(tags[2], start + timedelta(hours=h), 1.0, None, 0, 192, 192) for h in (3, 17)]
    conn = store.connect(path)
    try:
        store.add_tags(conn, [store.TagDef(t, 1) for t in tags])
        store.add_points(conn, points)
    finally:
        conn.close()
    metered = MeteredHistorian(EmulatorHistorian(path, tag_types=(1, 2, 3), batch_rows=1_000))
    opens = [
        partial(metered.read_history, tags, first + timedelta(days=d), first + timedelta(days=d + 1))
        for d in range(len(kinds))
    ]
    rows = []
    with ReadsAhead(opens) as reads:
        for index in range(len(kinds)):
            with reads.read(index) as batches:
                rows.append(sum(b.num_rows for b in batches))
            time.sleep(0.05)  # the caller's last insert: the next reads have time to run ahead
    load = metered.load.snapshot()["read"]
    assert load["queries"] == len(kinds)
    assert load["rows"] == sum(rows) == len(points)
    assert rows[1] == rows[6] == 2 * 86_400 // 20 and rows[4] == rows[7] == 2 and rows[0] == 0
    assert _read_ahead_threads() == 0
