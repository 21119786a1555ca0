"""HeldSessions: one embedded ClickHouse session across consecutive blocks while nobody else
waits, released between two blocks for a process or thread that waits (the lock is the one
`ChdbWarehouse` takes: a `flock` on `clickhouse.lock`, tried here through a second open file as
another process would)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ww_assets.warehouse import ChdbWarehouse, HeldSessions, WarehouseError
from ww_assets_tests.services.processes import wait_for


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


def test_one_session_serves_blocks_while_nobody_waits(tmp_path: Path) -> None:
    """Past the hold too: closing a session would cancel ClickHouse's background merges."""
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=0) as held:
        with held.connect() as first:
            assert _count(first) == 3
        assert not _lock_is_free(store)  # kept between blocks
        with held.connect() as second:
            assert second is first and _count(second) == 3
    assert _lock_is_free(store)  # leaving the scope closes it


_OTHER_PROCESS = """
import sys
from ww_assets.warehouse import ChdbWarehouse
with ChdbWarehouse(sys.argv[1], "wonderware").connect() as conn:
    conn.command("CREATE DATABASE IF NOT EXISTS wonderware")
    conn.command("CREATE TABLE wonderware.visits (n UInt8) ENGINE = MergeTree ORDER BY n")
    conn.command("INSERT INTO wonderware.visits VALUES (1)")
"""


def test_a_waiting_process_gets_the_store_at_the_end_of_a_block(tmp_path: Path) -> None:
    """Another process (the sync, a check) that waits for the store marks its wait; the
    holder, open longer than its hold, lets it in after the block it is in, then reopens."""
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=0) as held:
        with held.connect() as first:
            stamp = store.wait_stamp()
            other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS, str(store.path)])
            wait_for("the other process to wait", lambda: store.wait_stamp() != stamp,
                     timeout_s=60, interval_s=0.02)
            assert other.poll() is None  # it cannot get in during the block
        assert other.wait(timeout=60) == 0
        with held.connect() as second:
            assert second is not first
            visits = second.query("SELECT count() AS n FROM wonderware.visits")
            assert visits.column("n")[0].as_py() == 1


def test_a_waiter_gets_in_only_once_the_hold_is_over(tmp_path: Path) -> None:
    """Within `hold_s` of its opening the session is kept even though a thread waits; the
    waiter gets in when the holder's scope ends."""
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    got_in = threading.Event()

    def waiter() -> None:
        with store.connect():
            got_in.set()

    with HeldSessions(store, hold_s=60) as held:
        with held.connect() as first:
            stamp = store.wait_stamp()
            thread = threading.Thread(target=waiter)
            thread.start()
            wait_for("the thread to wait", lambda: store.wait_stamp() != stamp,
                     timeout_s=60, interval_s=0.02)
        with held.connect() as second:
            assert second is first and not got_in.is_set()
    thread.join(timeout=60)
    assert got_in.is_set()


def test_a_store_that_stays_busy_names_its_lock(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    impatient = ChdbWarehouse(tmp_path / "clickhouse", "wonderware", lock_timeout_s=0.3)
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            with impatient.connect():
                pass
        except WarehouseError as error:
            failure.append(error)

    with store.connect():
        thread = threading.Thread(target=attempt)
        thread.start()
        thread.join(timeout=30)
    assert failure and "stayed busy for 0.3 s" in str(failure[0])
    assert "clickhouse.lock" in str(failure[0])


def test_an_error_in_a_block_closes_the_session(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with HeldSessions(store, hold_s=60) as held:
        with pytest.raises(ZeroDivisionError), held.connect():
            1 / 0
        assert _lock_is_free(store)
        with held.connect() as conn:
            assert _count(conn) == 3


def _numbered(count: int, size: int, fail_at: int | None = None):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    for n in range(count):
        if n == fail_at:
            raise ConnectionResetError("historian connection dropped mid-read")
        yield pa.table({"x": pa.array(range(n * size, (n + 1) * size), pa.int64())})


def test_an_embedded_streamed_insert_is_one_part_per_statement(tmp_path: Path) -> None:
    """Each `insert_stream` statement takes tables until it has `rows` rows and stores them as
    one part; a source that fails mid-statement has its own exception raised, and that
    statement stores nothing (the earlier ones stay, for the next load to replace)."""
    store = ChdbWarehouse(tmp_path / "clickhouse", "db")
    with store.connect() as conn:
        conn.command("CREATE DATABASE IF NOT EXISTS db")
        conn.command("CREATE TABLE db.t (x Int64) ENGINE = MergeTree ORDER BY x")
        conn.command("SYSTEM STOP MERGES db.t")
        tables = _numbered(10, 100)
        sizes = []
        while inserted := conn.insert_stream("db.t", tables, rows=250):
            sizes.append(inserted)
        assert sizes == [300, 300, 300, 100]
        parts = conn.query(
            "SELECT count() AS n, sum(rows) AS stored FROM system.parts "
            "WHERE active AND database = 'db' AND table = 't'"
        ).to_pylist()[0]
        assert (parts["n"], parts["stored"]) == (4, 1000)

        conn.command("TRUNCATE TABLE db.t")
        failing = _numbered(10, 100, fail_at=4)
        assert conn.insert_stream("db.t", failing, rows=250) == 300
        with pytest.raises(ConnectionResetError, match="dropped mid-read"):
            conn.insert_stream("db.t", failing, rows=250)
        assert _rows(conn) == list(range(300))

        # ClickHouse's own refusal, before or during the stream, stays a WarehouseError
        with pytest.raises(WarehouseError, match="missing"):
            conn.insert_stream("db.missing", _numbered(10, 100), rows=250)
        conn.command("CREATE TABLE db.small (x Int64, CONSTRAINT small CHECK x < 150) "
                     "ENGINE = MergeTree ORDER BY x")
        with pytest.raises(WarehouseError, match="small"):
            conn.insert_stream("db.small", _numbered(10, 100), rows=1000)


def _rows(conn) -> list[int]:  # type: ignore[no-untyped-def]
    return conn.query("SELECT x FROM db.t ORDER BY x").column("x").to_pylist()


def test_a_server_streamed_insert_sends_groups_of_the_statement_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a server, `insert_stream` gathers tables into one INSERT of at least `rows` rows
    (one Native block each). (No ClickHouse server runs here: `send_insert`, which would send
    the statement on the driver's connection, is replaced by a recorder.)"""
    import pyarrow as pa

    from ww_assets import warehouse
    from ww_assets.warehouse import SERVER_INSERT_ROWS, _ServerConnection

    inserts: list[tuple[str, pa.Table]] = []
    client = object()

    def recorded(to: object, query: str, table: pa.Table, settings: dict[str, object]) -> int:
        assert to is client and settings == warehouse.INSERT_SETTINGS
        inserts.append((query, table))
        return table.num_rows

    monkeypatch.setattr(warehouse, "send_insert", recorded)
    conn = _ServerConnection(client)
    tables = _numbered(5, 100)
    assert [conn.insert_stream("db.t", tables, rows=150) for _ in range(4)] == [200, 200, 100, 0]
    assert [sql for sql, _ in inserts] == ["INSERT INTO db.t (`x`) VALUES"] * 3
    assert [table.column("x").to_pylist() for _, table in inserts] == [
        list(range(0, 200)), list(range(200, 400)), list(range(400, 500))
    ]
    assert conn.insert_stream("db.t", _numbered(3, 100)) == 300  # under SERVER_INSERT_ROWS: one
    assert len(inserts) == 4 and SERVER_INSERT_ROWS > 300


class _Answers:
    """A stand-in for clickhouse-driver's client: answers `check_server`'s queries from chDB,
    with a version and the settings it is told to have."""

    def __init__(self, version: str | None = None, without: tuple[str, ...] = ()) -> None:
        import chdb

        self.chdb, self.version, self.without = chdb, version, without
        self.sent: list[str] = []

    def execute(self, sql: str) -> list[tuple[str]]:
        self.sent.append(sql)
        if sql == "SELECT version()" and self.version:
            return [(self.version,)]
        rows = [tuple(line.strip('"').split('","')) for line in
                str(self.chdb.query(sql, "CSV")).splitlines() if line]  # fmt: skip
        return [row for row in rows if row[0] not in self.without]


def test_the_server_check_names_the_version_or_setting_that_is_missing() -> None:
    """The version gate on chDB's own engine (ClickHouse 26.x, which has everything), then on
    a server that reports an older version or lacks a setting: one line naming the version and
    the minimum. It reads `version()` and the settings tables only (no DDL, no parameters)."""
    from ww_assets.warehouse import MIN_SERVER_VERSION, UnsupportedServerError, check_server

    minimum = ".".join(map(str, MIN_SERVER_VERSION))
    client = _Answers()
    assert check_server(client, "ClickHouse server h:9000").startswith("26.")
    assert all(sql.startswith("SELECT") and "{" not in sql for sql in client.sent)

    older = f"{MIN_SERVER_VERSION[0]}.{MIN_SERVER_VERSION[1] - 1}.3.14"
    with pytest.raises(UnsupportedServerError) as refused:
        check_server(_Answers(older), "ClickHouse server h:9000")
    assert str(refused.value) == (
        f"ClickHouse server h:9000 runs ClickHouse {older}; ww_assets needs ClickHouse {minimum} or newer"
    )
    with pytest.raises(UnsupportedServerError, match="without the setting.s. optimize_move_to_prewhere_if_final;"):
        check_server(_Answers(without=("optimize_move_to_prewhere_if_final",)), "ClickHouse server h:9000")
