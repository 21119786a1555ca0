"""HeldSessions: one embedded ClickHouse session across consecutive blocks, for a bounded time,
released for other processes (the lock is the one `ChdbWarehouse` takes: a `flock` on
`clickhouse.lock`, tried here through a second open file as another process would)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from ww_assets.warehouse import ChdbWarehouse, HeldSessions


def _lock_is_free(store: ChdbWarehouse) -> bool:
    with open(store.path.with_name(store.path.name + ".lock"), "a+") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


def _count(conn) -> int:  # type: ignore[no-untyped-def]
    return int(conn.query("SELECT count() AS n FROM numbers(3)").column("n")[0].as_py())


def test_one_session_serves_blocks_until_the_hold_ends(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=60) as held:
        with held.connect() as first:
            assert _count(first) == 3
        assert not _lock_is_free(store)  # kept between blocks
        with held.connect() as second:
            assert second is first and _count(second) == 3
    assert _lock_is_free(store)  # leaving the scope closes it


def test_a_session_older_than_the_hold_closes_after_its_block(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=0) as held:
        with held.connect() as first:
            assert not _lock_is_free(store)
        assert _lock_is_free(store)  # another process gets in between two partitions
        with held.connect() as second:
            assert second is not first and _count(second) == 3


def test_an_error_in_a_block_closes_the_session(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=60) as held:
        with pytest.raises(ZeroDivisionError), held.connect():
            1 / 0
        assert _lock_is_free(store)
        with held.connect() as conn:
            assert _count(conn) == 3


def test_a_server_insert_sends_timestamps_as_milliseconds_with_the_same_bytes() -> None:
    """`ServerWarehouse.insert` hands clickhouse-driver History's timestamps as integer
    milliseconds (as `datetime` objects they cost 8 of the 10 µs per row of the insert); the
    driver's native-protocol blocks are byte for byte those the `datetime` objects gave.
    (No ClickHouse server runs here: the driver's own encoder writes into a socket stand-in.)"""
    from datetime import datetime

    import pyarrow as pa

    from bench.native_blocks import NativeBlocks
    from ww_assets.historian import rows_to_batch
    from ww_assets.history_store import with_load_id
    from ww_assets.schema import COLUMN_NAMES
    from ww_assets.warehouse import server_insert_columns

    start_at = COLUMN_NAMES.index("StartDateTime")
    rows = []
    for n, (moment, value) in enumerate([
        (datetime(2025, 6, 1, 0, 0, 0), 1.5),
        (datetime(2025, 6, 1, 12, 30, 15, 123000), None),
        (datetime(2026, 3, 29, 1, 59, 59, 999000), -2.25),
    ]):  # fmt: skip
        row = [None] * len(COLUMN_NAMES)
        row[0], row[1], row[2], row[11] = moment, "Tank 4 Level", value, "Full"
        row[start_at] = moment if n != 1 else None
        rows.append(tuple(row))
    table = with_load_id(pa.Table.from_batches([rows_to_batch(rows)]), 1_764_000_000_000_000_000)

    columns = server_insert_columns(table)
    assert columns[0] == [1748736000000, 1748781015123, 1774749599999]
    assert columns[start_at] == [1748736000000, None, 1774749599999]
    as_datetimes, as_milliseconds = NativeBlocks(keep=True), NativeBlocks(keep=True)
    as_datetimes.write([column.to_pylist() for column in table.columns])
    as_milliseconds.write(columns)
    assert len(as_milliseconds.sent) > 100
    assert as_milliseconds.sent == as_datetimes.sent
