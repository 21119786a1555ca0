"""Historian clients: SQL Server through pymssql, or the SQLite emulator. One interface.

Both answer `list_tags()` and `read_history(tags, start, end)`; the latter streams Arrow record
batches of the stored points of the half-open UTC window, never a synthetic row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ww_assets.history_query import (
    COPY_MODES,
    render_count_tsql,
    render_history_tsql,
    render_tags_tsql,
    window_query,
)
from ww_assets.resilience import CircuitBreaker, mssql_codes
from ww_assets.schema import HISTORY_ARROW_SCHEMA, HISTORY_COLUMNS


LOGIN_FAILED = 18456

MAX_TAGS_PER_QUERY = 500
"""Tag names in one query's IN list: far below SQL Server's limits on batch text and on the
expressions of one predicate, whatever WONDERWARE_PIPELINE_TAG_CHUNK_SIZE is."""


def tag_groups(tags: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """`tags` (duplicates dropped) in groups of at most `MAX_TAGS_PER_QUERY`, in order."""
    unique = tuple(dict.fromkeys(tags))
    for offset in range(0, len(unique), MAX_TAGS_PER_QUERY):
        yield unique[offset : offset + MAX_TAGS_PER_QUERY]


class HistorianError(RuntimeError):
    """The historian could not be reached or returned something unusable."""


@dataclass(frozen=True)
class TagInfo:
    name: str
    tag_type: int
    description: str | None = None
    min_eu: float | None = None
    max_eu: float | None = None
    unit: str | None = None


class HistorianClient(Protocol):
    def describe(self) -> str: ...

    def ping(self) -> None: ...

    def list_tags(self) -> list[TagInfo]: ...

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]: ...

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]: ...


# One struct field per History column, timestamps as naive microseconds (what pymssql gives).
_ROW_TYPE = pa.struct(
    [
        pa.field(c.name, pa.timestamp("us") if pa.types.is_timestamp(c.arrow_type) else c.arrow_type)
        for c in HISTORY_COLUMNS
    ]
)


def rows_to_batch(rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    """History rows (tuples in `HISTORY_COLUMNS` order, pymssql's Python types) as Arrow.

    Converted in C++ as one struct array (no Python transpose); a value of the wrong type
    falls back to the per-column path, whose error names the column.
    """
    if rows:
        try:
            array = pa.array(rows, type=_ROW_TYPE)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        else:
            batch = pa.RecordBatch.from_struct_array(array)
            refuse_points_merged_by_milliseconds(batch)
            # naive UTC datetimes; sub-millisecond digits are cut (DateTime64(3))
            return batch.cast(HISTORY_ARROW_SCHEMA, safe=False)
    return _rows_to_batch_by_column(rows)


def refuse_points_merged_by_milliseconds(batch: pa.RecordBatch) -> None:
    """Raise `HistorianError` when two points of one tag in `batch` (timestamps in µs) fall in
    the same millisecond: the copy keeps milliseconds, so they would become one key and one
    would silently replace the other. The historian stores milliseconds (67229), so this
    costs one pass over the timestamps and normally finds nothing."""
    micros = batch.column("DateTime").cast(pa.int64())
    millis = pc.divide(micros, 1000)  # integer division: toward zero, and these are positive
    if not pc.any(pc.not_equal(micros, pc.multiply(millis, 1000))).as_py():
        return
    keys = pa.table({"tag": batch.column("TagName"), "ms": millis})
    counted = keys.group_by(["tag", "ms"]).aggregate([([], "count_all")])
    merged = counted.filter(pc.greater(counted["count_all"], 1))
    if merged.num_rows:
        tag, ms = merged["tag"][0].as_py(), merged["ms"][0].as_py()
        stamp = f"{datetime(1970, 1, 1) + timedelta(milliseconds=ms):%Y-%m-%d %H:%M:%S.%f}"[:-3]
        raise HistorianError(
            f"tag {tag!r} has {merged['count_all'][0].as_py()} points within the millisecond "
            f"{stamp} UTC (sub-millisecond timestamps): the copy keeps milliseconds "
            "(DateTime64(3)) and would merge them into one; not loaded"
        )


def _rows_to_batch_by_column(rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    columns = list(zip(*rows)) if rows else [() for _ in HISTORY_COLUMNS]
    arrays = []
    for column, field, values in zip(HISTORY_COLUMNS, _ROW_TYPE, columns):
        try:
            arrays.append(pa.array(values, field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
            raise HistorianError(
                f"History column {column.source} has a value that is not {column.arrow_type}: {error}"
            ) from error
    batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(list(_ROW_TYPE)))
    refuse_points_merged_by_milliseconds(batch)
    return batch.cast(HISTORY_ARROW_SCHEMA, safe=False)


class EmulatorHistorian:
    """The SQLite-backed emulator (`ww simulate` fills it)."""

    def __init__(
        self,
        path: Path,
        tag_types: tuple[int, ...],
        retrieval_mode: str = "Full",
        server_timezone: str = "America/Chicago",
        batch_rows: int = 100_000,
    ) -> None:
        if retrieval_mode not in COPY_MODES:
            raise ValueError(
                f"the emulator client reads {' or '.join(COPY_MODES)} retrieval only, "
                f"not {retrieval_mode}: other modes cannot make an exact copy"
            )
        self.path = Path(path)
        self.tag_types = tag_types
        self.retrieval_mode = retrieval_mode
        self.server_timezone = server_timezone
        self.batch_rows = batch_rows

    def describe(self) -> str:
        return f"historian emulator at {self.path}"

    def _emulator(self) -> Any:
        from ww_assets.emulator.history import HistorianEmulator

        if not self.path.exists():
            raise HistorianError(
                f"no historian emulator at {self.path}: run `ww simulate create` "
                "(or set WONDERWARE_HOST to use a real historian)"
            )
        return HistorianEmulator(self.path, server_timezone=self.server_timezone)

    def ping(self) -> None:
        self._emulator().list_tags(self.tag_types)

    def list_tags(self) -> list[TagInfo]:
        """The tags to copy, by name (system-driver tags excluded)."""
        return [TagInfo(*row) for row in self._emulator().list_tags(self.tag_types)]

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        query = window_query(tuple(tags), start, end, self.retrieval_mode)
        yield from self._emulator().query_arrow(query, batch_rows=self.batch_rows)

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        """Stored points per tag in [start, end) UTC, what `read_history` returns (an indexed
        count); 0 for tags without any."""
        return self._emulator().count_points(tags, start_utc, end_utc)


class SqlServerHistorian:
    """AVEVA Historian through SQL Server: `History` and the tag tables of the Runtime database."""

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        username: str | None,
        password: str | None,
        tag_types: tuple[int, ...],
        retrieval_mode: str = "Full",
        login_timeout_s: int = 15,
        query_timeout_s: int = 600,
        batch_rows: int = 100_000,
    ) -> None:
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
        self.tag_types = tag_types
        self.retrieval_mode = retrieval_mode
        self.login_timeout_s = login_timeout_s
        self.query_timeout_s = query_timeout_s
        self.batch_rows = batch_rows

    def describe(self) -> str:
        return f"SQL Server {self.host}:{self.port}/{self.database}"

    def _connect(self) -> Any:
        import pymssql

        try:
            return pymssql.connect(
                server=self.host,
                port=str(self.port),
                user=self.username or "",
                password=self.password or "",
                database=self.database,
                login_timeout=self.login_timeout_s,
                timeout=self.query_timeout_s,
                appname="ww_assets",
                # TDS 7.3 and later carry datetime2(7) as such; older versions send it as text.
                tds_version="7.4",
            )
        except pymssql.Error as error:
            if LOGIN_FAILED in mssql_codes(error):
                # pymssql does not always carry the server's text; the number is what counts.
                raise HistorianError(
                    f"cannot connect to {self.describe()}: Login failed for user "
                    f"'{self.username}' (SQL Server error 18456: a wrong user name or password "
                    "in WONDERWARE_USERNAME / WONDERWARE_PASSWORD, or a disabled login)"
                ) from error
            raise HistorianError(f"cannot connect to {self.describe()}: {error}") from error

    def _run(self, sql: str, params: tuple[object, ...]) -> Iterator[list[tuple[Any, ...]]]:
        import pymssql

        with closing(self._connect()) as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params)
                while rows := cursor.fetchmany(self.batch_rows):
                    yield rows
            except pymssql.Error as error:
                raise HistorianError(f"{self.describe()}: query failed: {error}") from error

    def ping(self) -> None:
        for _ in self._run("SELECT 1", ()):
            pass

    def list_tags(self) -> list[TagInfo]:
        """The tags to copy, by name (system-driver tags excluded)."""
        sql, params = render_tags_tsql(self.tag_types)
        return sorted(
            (TagInfo(*row) for rows in self._run(sql, params) for row in rows), key=lambda t: t.name
        )

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        for group in tag_groups(tags):
            query = window_query(group, start, end, self.retrieval_mode)
            for rows in self._run(*render_history_tsql(query)):
                yield rows_to_batch(rows)

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        """Points per tag that `read_history` returns for [start, end) UTC, counted by the
        historian (`COUNT(*) ... GROUP BY TagName`); 0 for tags without any."""
        counts = dict.fromkeys(tags, 0)
        for group in tag_groups(tags):
            query = window_query(group, start_utc, end_utc, self.retrieval_mode)
            for rows in self._run(*render_count_tsql(query)):
                counts.update({tag: int(n) for tag, n in rows})
        return counts


class GuardedHistorian:
    """A historian client behind a circuit breaker: every query (not only connecting) counts,
    and while the breaker is open every call fails fast saying so."""

    def __init__(self, client: HistorianClient, breaker: CircuitBreaker) -> None:
        self.client = client
        self.breaker = breaker

    def describe(self) -> str:
        return self.client.describe()

    def ping(self) -> None:
        self.breaker.call(self.client.ping)

    def list_tags(self) -> list[TagInfo]:
        return self.breaker.call(self.client.list_tags)

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        return self.breaker.call(lambda: self.client.count_points(tags, start_utc, end_utc))

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        # Both clients' read_history are generators: the historian is first contacted by the
        # first next(), so that (and every later one) is what the breaker guards.
        batches = iter(self.client.read_history(tags, start, end))
        while True:
            batch = self.breaker.call(lambda: next(batches, None))
            if batch is None:
                return
            yield batch
