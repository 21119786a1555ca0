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
