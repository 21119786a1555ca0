"""Readers see exactly one copy of every point at every moment, statement by statement.

On a ClickHouse server nothing serializes two loads, so these tests interleave the statements
of two loads (`SliceLoad`, `RollupLoad`: the statements `replace_slice` and the rollup send,
on either backend) on one chDB session and read what readers read (`WonderwareHistory`,
`WonderwareHistoryAggregated`) after every one of them: never a point twice, never a point
missing that every version of the source has, and after the newest load finishes exactly its
rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from ww_assets.historian import rows_to_batch
from ww_assets.history_query import day_bounds
from ww_assets.history_store import (
    HISTORY_STORE,
    HISTORY_TABLE,
    LOADS_TABLE,
    SLICE,
    SliceLoad,
    ensure_schema,
    new_load_id,
    slice_params,
    with_load_id,
)
from ww_assets.history_store import ROLLUP_TABLE, ensure_rollup_schema
from ww_assets.rollup_sql import RollupLoad
from ww_assets.schema import HISTORY_COLUMNS
from ww_assets.warehouse import ChdbWarehouse, WarehouseConnection

DB = "wonderware"
DAY = date(2025, 6, 1)
START, END = day_bounds(DAY)
TAGS = ["Flow 'A'", "Level.B"]

Key = tuple[str, datetime]


def _source(value: float, every_min: int = 10, drop: int | None = None,
            extra: Key | None = None) -> pa.Table:  # fmt: skip
    """One version of the slice's stored points: every `every_min` minutes for each tag, all
    with `value`, without the `drop`-th point, with an `extra` point."""
    moments = [START + timedelta(minutes=m) for m in range(0, 24 * 60, every_min)]
    keys = [(tag, moment) for tag in TAGS for moment in moments]
    if drop is not None:
        del keys[drop]
    if extra:
        keys.append(extra)
    rows = []
    for tag, moment in sorted(keys):
        row = [None] * 33
        row[0], row[1], row[2], row[4], row[11] = moment.replace(tzinfo=None), tag, value, 0, "Full"
        rows.append(tuple(row))
    return pa.Table.from_batches([rows_to_batch(rows)])


def _keys(table: pa.Table) -> set[Key]:
    return set(zip(table["TagName"].to_pylist(), table["DateTime"].to_pylist()))


def _halves(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    half = table.num_rows // 2
    return table.slice(0, half), table.slice(half)


def _seen(conn: WarehouseConnection, start: datetime = START, end: datetime = END) -> dict[Key, float]:
    """What a reader of `WonderwareHistory` sees of the slice; fails on a point seen twice."""
    table = conn.query(
        f"SELECT TagName, DateTime, Value FROM {DB}.{HISTORY_TABLE} WHERE {SLICE} "
        "ORDER BY TagName, DateTime",
        slice_params(TAGS, start, end),
    )
    keys = list(zip(table["TagName"].to_pylist(), table["DateTime"].to_pylist()))
    assert len(keys) == len(set(keys)), f"a point seen twice: {len(keys) - len(set(keys))} extra"
    return dict(zip(keys, table["Value"].to_pylist()))


class Reader:
    """Reads after every step; `versions` are the source states in play: a point that every
    one of them holds must be visible at every moment, and nothing that none of them holds."""

    def __init__(self, conn: WarehouseConnection, *versions: pa.Table) -> None:
        self.conn = conn
        self.always = set.intersection(*map(_keys, versions))
        self.possible = set.union(*map(_keys, versions))
        self.reads = 0

    def run(self, steps: list[Callable[[], object]]) -> dict[Key, float]:
        seen = _seen(self.conn)
        for step in steps:
            step()
            seen = _seen(self.conn)
            self.reads += 1
            assert self.always <= set(seen), f"missing after step {self.reads}"
            assert set(seen) <= self.possible, f"a point of no source after step {self.reads}"
        return seen


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[WarehouseConnection]:
    with ChdbWarehouse(tmp_path / "clickhouse", DB).connect() as session:
        ensure_schema(session, DB)
        ensure_rollup_schema(session, DB)
        yield session


def _load(conn: WarehouseConnection, tables: list[pa.Table]) -> SliceLoad:
    load = SliceLoad(conn, DB, TAGS, START, END)
    load.begin()
    for table in tables:
        load.insert(iter([table]))
    load.finish()
    return load


def _exactly(seen: dict[Key, float], table: pa.Table) -> None:
    assert seen == dict(zip(zip(table["TagName"].to_pylist(), table["DateTime"].to_pylist()),
                            table["Value"].to_pylist()))  # fmt: skip


def test_a_inserts_part_b_inserts_all_and_finishes_then_a_finishes(conn: WarehouseConnection) -> None:
    """B began after A, so B is newer: for every point B's row wins, whatever A inserts
    after B finished, and the point A has and B does not (in A's first part) goes with B's
    finish."""
    old = _source(1.0)
    a = _source(2.0, drop=5, extra=(TAGS[0], START + timedelta(minutes=7)))
    b = _source(3.0, drop=40)
    _load(conn, [old])
    a_first, a_rest = _halves(a)
    load_a = SliceLoad(conn, DB, TAGS, START, END)
    load_b = SliceLoad(conn, DB, TAGS, START, END)
    seen = Reader(conn, old, a, b).run([
        load_a.begin,
        lambda: load_a.insert(iter([a_first])),
        load_b.begin,
        lambda: load_b.insert(iter([b])),
        load_b.finish,
        lambda: load_a.insert(iter([a_rest])),
        load_a.finish,
    ])  # fmt: skip
    assert load_b.load_id > load_a.load_id
    _exactly(seen, b)


@pytest.mark.parametrize("merged", [False, True], ids=["no merge", "OPTIMIZE FINAL"])
def test_a_load_that_fails_midway_leaves_one_copy_of_every_point(
    conn: WarehouseConnection, merged: bool
) -> None:
    """A fails after its first insert (its finish never runs), with or without a merge of
    every part in between: each point has one visible row (A's where it wrote one, the old
    load's elsewhere), and the next load makes the slice exact."""
    old, a, again = _source(1.0), _source(2.0, drop=3), _source(4.0, drop=100)
    _load(conn, [old])
    first, _ = _halves(a)
    load_a = SliceLoad(conn, DB, TAGS, START, END)
    steps: list[Callable[[], object]] = [load_a.begin, lambda: load_a.insert(iter([first]))]
    if merged:
        steps.append(lambda: conn.command(f"OPTIMIZE TABLE {DB}.{HISTORY_STORE} FINAL"))
    seen = Reader(conn, old, a).run(steps)
    assert set(seen) == _keys(old)  # nothing missing, even the point A does not have
    assert {v for k, v in seen.items() if k in _keys(first)} == {2.0}
    _exactly(Reader(conn, old, a, again).run([lambda: _load(conn, [again])]), again)


def test_a_load_killed_between_its_inserts_and_its_finish(conn: WarehouseConnection) -> None:
    """Every insert landed, the deletion markers never did: the point the new source lost
    is still seen (once), every other point is the new load's; the next load is exact."""
    old, new = _source(1.0), _source(2.0, drop=7, extra=(TAGS[1], START + timedelta(hours=5, seconds=1)))
    _load(conn, [old])
    load = SliceLoad(conn, DB, TAGS, START, END)
    first, rest = _halves(new)
    seen = Reader(conn, old, new).run(
        [load.begin, lambda: load.insert(iter([first])), lambda: load.insert(iter([rest]))]
    )
    assert set(seen) == _keys(old) | _keys(new)
    assert len({v for k, v in seen.items() if k in _keys(new)}) == 1
    _exactly(Reader(conn, old, new).run([lambda: _load(conn, [new])]), new)


@pytest.mark.parametrize("order", ["day first", "sync first"])
def test_a_sync_window_racing_the_daily_partition(conn: WarehouseConnection, order: str) -> None:
    """The sync's window (the day's last 20 minutes and the next day's first 10) and the
    day's partition, each inserting part, the other all, in both orders of their ids: every
    point of the overlap is seen once throughout, and the union is exact at the end."""
    old, day = _source(1.0), _source(2.0)
    _load(conn, [old])
    w_start, w_end = END - timedelta(minutes=20), END + timedelta(minutes=10)
    window_rows = []
    for tag in TAGS:
        for minute in range(0, 30, 10):  # the points the day's source has, and one more
            row = [None] * 33
            moment = (w_start + timedelta(minutes=minute)).replace(tzinfo=None)
            row[0], row[1], row[2], row[4], row[11] = moment, tag, 2.0, 0, "Full"
            window_rows.append(tuple(row))
    window = pa.Table.from_batches([rows_to_batch(sorted(window_rows, key=lambda r: (r[1], r[0])))])
    daily = SliceLoad(conn, DB, TAGS, START, END)
    sync = SliceLoad(conn, DB, TAGS, w_start, w_end)
    first, second = (daily, sync) if order == "day first" else (sync, daily)
    data = {id(daily): day, id(sync): window}
    head, tail = _halves(data[id(first)])

    def seen_both() -> dict[Key, float]:
        return _seen(conn, START, w_end)

    steps = [first.begin, lambda: first.insert(iter([head])), second.begin,
             lambda: second.insert(iter([data[id(second)]])), second.finish,
             lambda: first.insert(iter([tail])), first.finish]  # fmt: skip
    everything = _keys(day) | _keys(window)
    for step in steps:
        step()
        seen = seen_both()  # fails on a point seen twice
        assert _keys(old) <= set(seen) <= everything
    assert set(seen_both()) == everything and set(seen_both().values()) == {2.0}


def _rollup(conn: WarehouseConnection) -> dict[tuple[str, str], tuple[float, int]]:
    table = conn.query(
        f"SELECT TagName, toString(minute_timestamp) AS minute, avg_value, count FROM {DB}.{ROLLUP_TABLE} "
        "WHERE toDate(minute_timestamp) = {d:Date}",
        {"d": DAY},
    )
    keys = list(zip(table["TagName"].to_pylist(), table["minute"].to_pylist()))
    assert len(keys) == len(set(keys)), "a minute seen twice"
    return dict(zip(keys, zip(table["avg_value"].to_pylist(), table["count"].to_pylist())))


def test_two_rollups_racing_and_one_failing_leave_one_row_per_minute(
    conn: WarehouseConnection,
) -> None:
    """The rollup's loads over one day: A inserts, B inserts and finishes, A finishes; then
    C fails after its insert: every minute of the raw points is seen once at every moment."""
    _load(conn, [_source(1.0)])
    first = RollupLoad(conn, DB, DAY)
    first.begin(), first.insert(), first.finish()
    minutes = set(_rollup(conn))
    assert len(minutes) == 2 * 144
    _load(conn, [_source(5.0, every_min=20)])  # the raw points change: every other minute goes
    a, b, c = (RollupLoad(conn, DB, DAY) for _ in range(3))
    remaining = {(tag, minute) for tag, minute in minutes if int(minute[14:16]) % 20 == 0}
    expected = minutes  # until B's finish marks the minutes without points deleted
    for step in (a.begin, a.insert, b.begin, b.insert, b.finish, a.finish, c.begin, c.insert):
        step()
        if step == b.finish:
            expected = remaining
        seen = _rollup(conn)
        assert set(seen) == expected
    assert len(seen) == 2 * 72 and set(seen.values()) == {(5.0, 1)}


def test_load_ids_follow_every_registered_load_whatever_the_clock(
    conn: WarehouseConnection,
) -> None:
    """A load registered by a host (or server) whose clock runs a day ahead: the next id is
    still larger; ids of loads begun one after another increase."""
    ahead = int((datetime.now(timezone.utc) + timedelta(days=1)).timestamp() * 1e9)
    conn.command(f"INSERT INTO {DB}.{LOADS_TABLE} (LoadId, Target, Tags, Start, End) "
                 "VALUES ({id:UInt64}, 'elsewhere', 1, '2025-06-01', '2025-06-02')",
                 {"id": ahead})  # fmt: skip
    ids = [new_load_id(conn, DB, HISTORY_STORE, 2, START, END) for _ in range(20)]
    assert ids[0] > ahead and ids == sorted(ids) and len(set(ids)) == 20
    register = conn.query(f"SELECT count() AS n FROM {DB}.{LOADS_TABLE}").column("n")[0].as_py()
    assert register == 21


def test_an_older_layout_is_moved_into_the_store(tmp_path: Path) -> None:
    """A warehouse of the layout before the views (`WonderwareHistory` a table, two loads'
    rows of one point left by a killed load, ids from a host clock far ahead): ensuring the
    schema moves the rows into the store; readers see the point once, the newer row, and the
    next load is newer than both."""
    ahead = int((datetime.now(timezone.utc) + timedelta(days=3)).timestamp() * 1e9)
    with ChdbWarehouse(tmp_path / "clickhouse", DB).connect() as conn:
        conn.command(f"CREATE DATABASE {DB}")
        columns = ", ".join(f"`{c.name}` {c.clickhouse_type}" for c in HISTORY_COLUMNS)
        conn.command(f"CREATE TABLE {DB}.{HISTORY_TABLE} ({columns}, LoadId UInt64) "
                     "ENGINE = ReplacingMergeTree(LoadId) ORDER BY (TagName, DateTime)")  # fmt: skip
        point = _source(1.0).slice(0, 1)
        for load_id, value in ((ahead - 5, 1.0), (ahead, 2.0)):
            row = with_load_id(point.set_column(2, "Value", pa.array([value])), load_id)
            conn.insert(f"{DB}.{HISTORY_TABLE}", row)
        ensure_schema(conn, DB)
        engine = conn.query(f"SELECT engine FROM system.tables WHERE database = '{DB}' "
                            f"AND name = '{HISTORY_TABLE}'").column("engine")[0].as_py()  # fmt: skip
        assert engine == "View"
        assert list(_seen(conn).values()) == [2.0]
        assert SliceLoad(conn, DB, TAGS, START, END).begin() > ahead
