"""ClickHouse access: embedded chDB or a server, the same SQL for both.

`Warehouse.connect()` yields a `WarehouseConnection` with three verbs (query to Arrow, command,
insert Arrow). Query parameters use ClickHouse's `{name:Type}` syntax on both backends.

chDB opens a data directory in one process at a time, so every embedded session is
taken under an exclusive file lock. A process that waits for it says so (`wait_stamp`), and a
session that others wait for is kept short (one partition's load after at least 5 s of a run's
consecutive partitions, one check step's queries, one CLI command): a backfill run, the sync, a
check and the CLI queue for seconds at most instead of failing.
"""

from __future__ import annotations

import fcntl
import itertools
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from ww_assets.native_insert import send_insert

Params = Mapping[str, Any]


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused a statement."""


class WarehouseConnection(Protocol):
    def query(self, sql: str, params: Params | None = None) -> pa.Table: ...

    def command(self, sql: str, params: Params | None = None) -> None: ...

    def insert(self, table: str, data: pa.Table) -> None: ...

    def insert_stream(self, table: str, tables: Iterator[pa.Table], rows: int | None = None) -> int:
        """One INSERT of the tables pulled from `tables` (one schema) until `rows` rows have
        been taken (the backend's statement size if None) or `tables` ends; returns the rows
        inserted, 0 if `tables` had none left. An exception of `tables` is raised as it is,
        and the statement inserts nothing."""
        ...


class Warehouse(Protocol):
    database: str

    def connect(self) -> Any:  # a context manager yielding a WarehouseConnection
        ...

    def describe(self) -> str: ...

    def wait_stamp(self) -> int:
        """A value that changes while another process or thread waits for a session (constant
        where sessions are not exclusive)."""
        ...


STREAM_ROWS = 500_000
"""Rows per embedded INSERT, streamed from the read: ClickHouse squashes a statement's blocks
(up to 1,048,449 rows) into one part, so background merges rewrite less than after 200k-row
inserts (a copy's CPU -15 to -25 %); 1M rows saved no more and cost 200 MB more peak RSS."""

SERVER_INSERT_ROWS = 200_000
"""Rows per INSERT to a ClickHouse server: one Native block (about 25 MB for History rows)."""

SESSION_HOLD_S = 5.0
"""How long `HeldSessions` keeps its session at least before it lets a waiting process in."""


class HeldSessions:
    """`inner` whose session stays open from one `connect()` block to the next. Once another
    process (or thread) waits for the store and the session has been open `hold_s` seconds,
    it closes at the end of a block, so the sync or a check gets in between two partitions.
    An error in a block closes it. Use as a context manager; leaving it closes the session.

    Why hold: opening an embedded session costs 20-150 ms (more with more parts), and closing
    one cancels ClickHouse's background merges, which the next session starts again from zero.
    A run of 4.32M-row partitions that reopened its session every 5 s never merged beyond one
    part per partition, and its asset body took 12-15 % longer (docs/performance.md)."""

    def __init__(self, inner: Warehouse, hold_s: float = SESSION_HOLD_S) -> None:
        self.inner, self.hold_s, self.database = inner, hold_s, inner.database
        self._session: ExitStack | None = None
        self._conn: WarehouseConnection | None = None
        self._opened = 0.0
        self._stamp_at_open = 0

    def describe(self) -> str:
        return self.inner.describe()

    def wait_stamp(self) -> int:
        return self.inner.wait_stamp()

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        if self._conn is None:
            session = ExitStack()
            self._conn = session.enter_context(self.inner.connect())
            self._session, self._opened = session, time.monotonic()
            self._stamp_at_open = self.inner.wait_stamp()
        try:
            yield self._conn
        except BaseException:
            self.close()
            raise
        if (time.monotonic() - self._opened >= self.hold_s
                and self.inner.wait_stamp() != self._stamp_at_open):
            self.close()

    def close(self) -> None:
        session, self._session, self._conn = self._session, None, None
        if session is not None:
            session.close()

    def __enter__(self) -> HeldSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_rows(tables: Iterator[pa.Table], rows: int) -> list[pa.Table]:
    """Tables pulled from `tables` until they hold `rows` rows or more (fewer at its end)."""
    taken: list[pa.Table] = []
    count = 0
    while count < rows and (table := next(tables, None)) is not None:
        taken.append(table)
        count += table.num_rows
    return taken


# Rows are stored as given: no ReplacingMergeTree collapse inside an insert block (a source
# that returned a key twice is then visible to the duplicate check rather than silently
# merged), and the insert skips that merge pass (about a third of its time).
INSERT_SETTINGS = {"optimize_on_insert": 0}
_INSERT_SETTINGS_SQL = ", ".join(f"{k} = {v}" for k, v in INSERT_SETTINGS.items())

# ---------------------------------------------------------------- embedded chDB

_CH_ESCAPES = {"\\": "\\\\", "'": "\\'"}


def _chdb_param(value: Any) -> str:
    """A parameter in ClickHouse's text form (chDB passes values through as text)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quoted(v) for v in value) + "]"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _quoted(value: Any) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + "".join(_CH_ESCAPES.get(c, c) for c in str(value)) + "'"


class _ChdbConnection:
    creates_schema = True
    """Embedded: no administrator creates the schema, the first session that needs it does."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def query(self, sql: str, params: Params | None = None) -> pa.Table:
        # Read the Arrow bytes here: chDB's own "ArrowTable" reader imports pandas (~0.5 s a
        # process, which every run and sensor process would pay).
        result = self._run(sql, params, "Arrow")
        if len(result) == 0:
            return pa.table({})
        return pa.ipc.open_file(result.get_memview().view()).read_all()

    def command(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, params, "CSV")

    def insert(self, table: str, data: pa.Table) -> None:
        self.insert_stream(table, iter([data]))

    def insert_stream(self, table: str, tables: Iterator[pa.Table], rows: int | None = None) -> int:
        first = next(tables, None)
        if first is None:
            return 0
        limit, taken, failure = rows or STREAM_ROWS, 0, []

        def batches() -> Iterator[pa.RecordBatch]:
            # Pulled by chDB's own thread while it inserts: ClickHouse gathers the stream into
            # blocks of up to `min_insert_block_size_rows`, so a statement is one part.
            nonlocal taken
            try:
                for part in itertools.chain([first], tables):
                    yield from part.to_batches()
                    taken += part.num_rows
                    if taken >= limit:
                        return
            except Exception as error:  # not GeneratorExit: chDB may drop a stream it failed on
                failure.append(error)
                raise

        columns = ", ".join(f"`{name}`" for name in first.column_names)
        # chDB's Python() table function reads the local variable named in the SQL.
        arrow_data = pa.RecordBatchReader.from_batches(first.schema, batches())  # noqa: F841
        try:
            self._run(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM Python(arrow_data) "
                f"SETTINGS {_INSERT_SETTINGS_SQL}",
                None,
                "CSV",
            )
        except WarehouseError:
            if failure:
                raise failure[0] from None
            raise
        return taken

    def _run(self, sql: str, params: Params | None, fmt: str) -> Any:
        text_params = {k: _chdb_param(v) for k, v in (params or {}).items()}
        try:
            return self._session.query(sql, fmt, params=text_params or None)
        except Exception as error:  # chDB raises plain RuntimeError subclasses
            raise WarehouseError(f"embedded ClickHouse: {error}") from error


_process_lock = threading.Lock()


class ChdbWarehouse:
    """Embedded ClickHouse (chDB) in `path`; sessions under a cross-process lock."""

    def __init__(self, path: Path, database: str, lock_timeout_s: float = 600.0) -> None:
        self.path = Path(path)
        self.database = database
        self.lock_timeout_s = lock_timeout_s
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._wanted_path = self.path.with_name(self.path.name + ".wanted")

    def describe(self) -> str:
        return f"chDB (embedded) at {self.path}, database {self.database}"

    def wait_stamp(self) -> int:
        """The time a waiter last marked `clickhouse.wanted` (it does every 0.2 s)."""
        try:
            return self._wanted_path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        from chdb import session as chdb_session

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            session = chdb_session.Session(str(self.path))
            try:
                yield _ChdbConnection(session)
            finally:
                session.close()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This process's lock, then the file lock; while waiting for either, the wait is
        marked on `clickhouse.wanted` for the holder to see (`wait_stamp`)."""
        deadline, marked = time.monotonic() + self.lock_timeout_s, -1.0

        def wait() -> None:
            nonlocal marked
            now = time.monotonic()
            if now > deadline:
                raise WarehouseError(
                    f"embedded ClickHouse at {self.path} stayed busy for "
                    f"{self.lock_timeout_s:g} s (lock {self._lock_path})"
                )
            if now - marked >= 0.2:
                self._wanted_path.touch()
                marked = now

        while not _process_lock.acquire(timeout=0.02):
            wait()
        try:
            with open(self._lock_path, "a+") as handle:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        wait()
                        time.sleep(0.02)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            _process_lock.release()


# ---------------------------------------------------------------- ClickHouse server


MIN_SERVER_VERSION = (24, 3)
"""The oldest ClickHouse server the statements are written for: readers query `FINAL` over a
`ReplacingMergeTree(LoadId, IsDeleted)` (23.2+), which hides deleted rows on every read path
only since 23.8; 24.3 is the first long-term-support release past that. Untested here: no
server of these versions can be had on this machine (docs/reliability.md)."""

SERVER_SETTINGS = ("optimize_on_insert", "optimize_read_in_window_order",
                   "optimize_move_to_prewhere_if_final")
"""Query settings the statements send; a server without one of them is refused."""



class UnsupportedServerError(WarehouseError):
    """The ClickHouse server is older than `MIN_SERVER_VERSION` or lacks a setting."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_server(client: Any, where: str) -> str:
    """The server's version, once it is known to take the statements; raises
    `UnsupportedServerError` with one line naming the version and the minimum otherwise.
    Sends only statements every ClickHouse version parses, and writes nothing."""
    version = str(client.execute("SELECT version()")[0][0])
    minimum = ".".join(map(str, MIN_SERVER_VERSION))
    if _version_tuple(version) < MIN_SERVER_VERSION:
        raise UnsupportedServerError(
            f"{where} runs ClickHouse {version}; ww_assets needs ClickHouse {minimum} or newer"
        )
    names = ", ".join(f"'{name}'" for name in SERVER_SETTINGS)
    found = {row[0] for row in client.execute(f"SELECT name FROM system.settings WHERE name IN ({names})")}
    missing = [name for name in SERVER_SETTINGS if name not in found]
    if missing:
        raise UnsupportedServerError(
            f"{where} runs ClickHouse {version} without the setting(s) {', '.join(missing)}; "
            f"ww_assets needs ClickHouse {minimum} or newer"
        )
    return version


@contextmanager
def _driver_errors_as_warehouse_errors(where: str) -> Iterator[None]:
    """clickhouse-driver's errors, and the socket's, raised as `WarehouseError` naming `where`."""
    from clickhouse_driver.errors import Error

    try:
        yield
    except (Error, OSError, EOFError) as error:
        raise WarehouseError(f"{where}: {error}") from error


class _ServerConnection:
    """clickhouse-driver client from dagster-clickhouse, with server-side `{name:Type}` params;
    inserts send the Arrow columns as Native blocks on the driver's connection
    (`native_insert`). The driver's errors are raised as `WarehouseError` (its message keeps
    the server's `Code: N.`, which the retry classification reads)."""

    creates_schema = False
    """A server's schema is created by `ww init` only (`history_store.ensure_schema`)."""

    def __init__(self, client: Any, where: str = "ClickHouse server") -> None:
        self._client = client
        self._where = where

    def query(self, sql: str, params: Params | None = None) -> pa.Table:
        rows, columns = self._execute(sql, params, with_column_types=True)
        names = [name for name, _ in columns]
        return pa.table({n: [row[i] for row in rows] for i, n in enumerate(names)})

    def command(self, sql: str, params: Params | None = None) -> None:
        self._execute(sql, params)

    def insert(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        with _driver_errors_as_warehouse_errors(self._where):
            send_insert(self._client, f"INSERT INTO {table} ({columns}) VALUES", data, INSERT_SETTINGS)

    def insert_stream(self, table: str, tables: Iterator[pa.Table], rows: int | None = None) -> int:
        group = first_rows(tables, rows or SERVER_INSERT_ROWS)
        if group:
            self.insert(table, pa.concat_tables(group))
        return sum(t.num_rows for t in group)

    def _execute(self, sql: str, params: Params | None, **kwargs: Any) -> Any:
        values = {k: (v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(v, datetime) else v)
                  for k, v in (params or {}).items()}
        return self._call(sql, values, **kwargs)

    def _call(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        with _driver_errors_as_warehouse_errors(self._where):
            return self._client.execute(sql, *args, **kwargs)


class ServerWarehouse:
    """A ClickHouse server through dagster-clickhouse's `ClickhouseResource`.

    The resource must be built with `settings={"server_side_params": True}` so that the
    `{name:Type}` parameters reach the server as parameters (see `resources.py`).
    """

    def __init__(self, resource: Any, database: str) -> None:
        self.resource = resource
        self.database = database

    def describe(self) -> str:
        return f"ClickHouse server {self.resource.host}:{self.resource.port}, database {self.database}"

    def wait_stamp(self) -> int:
        return 0  # a server's sessions do not exclude one another

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """A session; the first one of a process checks the server's version and settings
        (`check_server`) before any statement of the caller's is sent."""
        where = f"ClickHouse server {self.resource.host}:{self.resource.port}"
        with self.resource.get_connection() as client:
            if where not in _checked_servers:
                with _driver_errors_as_warehouse_errors(self.describe()):
                    check_server(client, where)
                _checked_servers.add(where)
            yield _ServerConnection(client, where)


_checked_servers: set[str] = set()
"""Servers whose version this process has checked (`ServerWarehouse.connect`)."""
