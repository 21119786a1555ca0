"""Answers `History` queries from the emulator's stored points with the historian's semantics.

What is emulated: the `Full` and `Delta` retrieval modes, inclusive and exclusive
bounds, the synthetic initial-value row of an inclusive start (`Quality = 133`, or a NULL row
with `QualityDetail = 65536`), and the time zone of bounds and results (`wwTimeZone`; without
it, the server's local time with daylight saving, so the autumn hour repeats).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import adbc_driver_sqlite.dbapi as adbc_sqlite
import pyarrow as pa
import pyarrow.compute as pc

from ww_assets.emulator import store
from ww_assets.history_query import ONE_TICK, HistoryQuery, render_tags_tsql
from ww_assets.schema import COLUMN_NAMES, HISTORY_ARROW_SCHEMA

EMULATED_MODES = ("Full", "Delta")

INITIAL_VALUE_QUALITY = 133
"""`Quality` of the synthetic initial-value row of an inclusive start (sp-omi 53886)."""
NO_INITIAL_VALUE_DETAIL = 65536
"""`QualityDetail` of the NULL initial row when the tag has no point before the start (53893)."""
BAD_QUALITY = 1

STRING_TAG_TYPE = 3

# The order in which `_rows` builds a row; checked against HISTORY_COLUMNS at import so the
# hot loop can build a literal tuple.
_ROW_LAYOUT = (
    "DateTime", "TagName", "Value", "VValue", "Quality", "QualityDetail", "OpcQuality",
    "wwTagKey", "wwRowCount", "wwResolution", "wwEdgeDetection", "wwRetrievalMode",
    "wwTimeDeadband", "wwValueDeadband", "wwTimeZone", "wwVersion", "wwCycleCount",
    "wwTimeStampRule", "wwInterpolationType", "wwQualityRule", "wwStateCalc", "StateTime",
    "PercentGood", "wwParameters", "StartDateTime", "SourceTag", "SourceServer", "wwFilter",
    "wwValueSelector", "wwMaxStates", "wwOption", "wwExpression", "wwUnit",
)  # fmt: skip
if _ROW_LAYOUT != COLUMN_NAMES:
    raise ImportError("emulator row layout is out of date with ww_assets.schema.HISTORY_COLUMNS")

# Echoed parameters the emulator does not vary: the historian's defaults for Full/Delta.
_EDGE_DETECTION = "None"
_TIME_DEADBAND = 0
_VALUE_DEADBAND = 0.0
_TIMESTAMP_RULE = "Start"
_INTERPOLATION_TYPE = "StairStep"
_QUALITY_RULE = "Extended"
_FILTER = "NoFilter"
_VALUE_SELECTOR = "AUTO"

_SELECT_POINTS = "SELECT DateTime, Value, VValue, Quality, QualityDetail, OpcQuality FROM Points"

TagRow = tuple[str, int, str | None, float | None, float | None, str | None]


class HistorianEmulator:
    """The historian's `History` and tag catalog, answered from a store at `path`.

    `server_timezone` is the historian server's zone (an IANA name), used for queries without
    `wwTimeZone`. Each call opens its own SQLite connection, so one emulator can be shared by
    threads, and a simulator process may write meanwhile.
    """

    def __init__(self, path: str | Path, server_timezone: str = "America/Chicago") -> None:
        self.path = Path(path)
        self.server_timezone = server_timezone
        self._server_zone = _zone(server_timezone)

    def __repr__(self) -> str:
        return f"HistorianEmulator({str(self.path)!r}, server_timezone={self.server_timezone!r})"

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(
                f"historian emulator store {self.path} does not exist; "
                "create a plant first (`ww simulate create`)"
            )
        return store.connect(self.path)

    def list_tags(self, tag_types: tuple[int, ...]) -> list[TagRow]:
        """(TagName, TagType, Description, MinEU, MaxEU, Unit) of `tag_types`, by name: the
        answer of `render_tags_tsql` on these tables (system-driver tags excluded)."""
        sql, params = render_tags_tsql(tag_types, placeholder="?")
        conn = self._connect()
        try:
            return sorted(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def count_points(
        self, tags: Iterable[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        """Stored points per tag in the half-open UTC window [start, end); 0 for tags without.

        Bounds are aware datetimes or naive ones meaning UTC.
        """
        return self._count_stored(tags, store.format_utc(start_utc), store.format_utc(end_utc))

    def count(self, q: HistoryQuery) -> dict[str, int]:
        """Rows per tag that `query(q)` returns, as the historian's `COUNT(*) ... GROUP BY
        TagName` counts them (tags without rows left out). A Full query with an exclusive
        start returns the stored points of its window as they are: an indexed count."""
        zone = self._checked(q, 1)
        if q.retrieval_mode == "Full" and not q.start_inclusive:
            window = _window(q, zone)
            if window is None:
                return {}
            counted = self._count_stored(q.tags, window[1], window[2])
            return {tag: n for tag, n in counted.items() if n}
        counts: dict[str, int] = {}
        for batch in self.query(q):
            for row in batch:
                counts[row[1]] = counts.get(row[1], 0) + 1
        return counts

    def _count_stored(self, tags: Iterable[str], start_text: str, end_text: str) -> dict[str, int]:
        conn = self._connect()
        try:
            # One key-range count per tag: without a GROUP BY SQLite counts a range at about
            # half the cost per point (the row-count check asks this of every partition).
            return {
                tag: conn.execute(
                    "SELECT count(*) FROM Points WHERE TagName = ? AND DateTime >= ? "
                    "AND DateTime < ?",
                    (tag, start_text, end_text),
                ).fetchone()[0]
                for tag in dict.fromkeys(tags)
            }
        finally:
            conn.close()

    def query(self, q: HistoryQuery, batch_rows: int = 50_000) -> Iterator[list[tuple]]:
        """Rows of `History` for `q`, in lists of at most `batch_rows`, ordered by tag and time.

        Each row has the 33 columns of `HISTORY_COLUMNS` with the Python types pymssql gives
        (naive datetimes in the query's time zone). Tags that do not exist return nothing.
        Streams: memory is bounded by `batch_rows`, not by the window.
        """
        zone = self._checked(q, batch_rows)
        return self._rows(q, zone, batch_rows)

    def query_arrow(self, q: HistoryQuery, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """The rows of `query(q)` as Arrow record batches of at most `batch_rows` rows, for the
        pipeline's reads: `Full` retrieval with an exclusive start, the stored points as they
        are, fetched straight into Arrow in one SQLite snapshot (no Python object per value).

        Equal to `historian.rows_to_batch` of `query(q)`'s rows: timestamps are the naive
        wall-clock times of the query's zone, typed as in `HISTORY_ARROW_SCHEMA`. Other modes
        and an inclusive start (an initial-value row) are answered by `query` only.
        """
        zone = self._checked(q, batch_rows)
        if q.retrieval_mode != "Full" or q.start_inclusive:
            raise ValueError(
                f"query_arrow reads stored points as they are (Full, exclusive start); "
                f"{q.retrieval_mode} retrieval"
                f"{' with an inclusive start' if q.start_inclusive else ''} is answered by query()"
            )
        return self._stored_batches(q, zone, batch_rows)

    def _rows(self, q: HistoryQuery, zone: tzinfo | None, batch_rows: int) -> Iterator[list[tuple]]:
        echo = _echo(q)
        buffer: list[tuple] = []
        for tag, key, points in self._stored_points(q, zone, batch_rows):
            built = _rows_utc(points, tag, key, echo) if zone is None else _rows_local(
                points, tag, key, echo, zone
            )
            if not buffer and len(built) == batch_rows:
                yield built
                continue
            buffer.extend(built)
            while len(buffer) >= batch_rows:
                yield buffer[:batch_rows]
                buffer = buffer[batch_rows:]
        if buffer:
            yield buffer

    def _stored_batches(
        self, q: HistoryQuery, zone: tzinfo | None, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """`q`'s stored points as they are, in one SQLite query (one snapshot) read into Arrow
        by the ADBC SQLite driver."""
        window = _window(q, zone)
        if window is None:
            return
        condition, start_text, end_text = window
        self._connect().close()  # the store's checks and its error when it is missing
        echo = _echo(q)
        # The driver carries its own SQLite: this read must not overlap an access to the store
        # through `sqlite3` in this process (a closing sqlite3 connection would drop the read's
        # POSIX locks), so the tags are looked up on the driver's connection too.
        with adbc_sqlite.connect(self.path.resolve().as_uri()) as adbc, adbc.cursor() as cursor:
            cursor.execute(
                "SELECT TagName, wwTagKey FROM TagRef WHERE TagName IN "
                "(SELECT value FROM json_each(?)) ORDER BY TagName",
                (json.dumps(list(dict.fromkeys(q.tags))),),
            )
            tags = cursor.fetch_arrow_table()
            if not tags.num_rows:
                return
            names = tags.column(0).combine_chunks()
            keys = tags.column(1).cast(pa.int32()).combine_chunks()
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            cursor.execute(
                _SELECT_ARROW_POINTS.format(condition=condition),
                (json.dumps(names.to_pylist()), start_text, end_text),
            )
            for index, points in enumerate(cursor.fetch_record_batch()):
                points = points.slice(1) if index == 0 else points  # the typed first row
                if points.num_rows:
                    yield _arrow_batch(points, names, keys, echo, zone)

    def _checked(self, q: HistoryQuery, batch_rows: int) -> tzinfo | None:
        """The query's zone (None for UTC), once its mode and batch size are known to work."""
        if q.retrieval_mode not in EMULATED_MODES:
            raise ValueError(
                f"retrieval mode {q.retrieval_mode} is not emulated; "
                f"the emulator answers {' and '.join(EMULATED_MODES)} only"
            )
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        return self._query_zone(q.time_zone)

    def _query_zone(self, name: str | None) -> tzinfo | None:
        """The zone of a query's bounds and results; None for UTC (no conversion)."""
        if name is None:
            return self._server_zone
        if name.upper() == "UTC":
            return None
        return _zone(name)

    def _stored_points(
        self, q: HistoryQuery, zone: tzinfo | None, batch_rows: int
    ) -> Iterator[tuple[str, int, list[tuple]]]:
        """(TagName, wwTagKey, points) in tag and time order: the stored points `q` returns,
        with the initial-value row and the Delta filter applied, at most `batch_rows` a list.
        A point is (DateTime text in UTC, Value, VValue, Quality, QualityDetail, OpcQuality).
        """
        window = _window(q, zone)
        if window is None:
            return
        condition, start_text, end_text = window
        window_sql = f"{_SELECT_POINTS} WHERE TagName = ? AND {condition} ORDER BY DateTime"
        conn = self._connect()
        try:
            # One read transaction: every tag sees the same snapshot while a simulator appends.
            conn.execute("BEGIN")
            for tag, tag_type, key in _existing_tags(conn, q.tags):
                chunks: Iterable[list[tuple]] = _tag_rows(
                    conn, window_sql, tag, start_text, end_text, batch_rows
                )
                if q.start_inclusive:
                    initial = _initial_point(conn, tag, start_text)
                    if initial is not None:
                        chunks = _prepend(initial, chunks)
                if q.retrieval_mode == "Delta":
                    chunks = _delta(chunks, 2 if tag_type == STRING_TAG_TYPE else 1)
                for points in chunks:
                    yield tag, key, points
        finally:
            conn.rollback()
            conn.close()


def _window(q: HistoryQuery, zone: tzinfo | None) -> tuple[str, str, str] | None:
    """(SQL condition on DateTime with two parameters, start, end) of `q`'s window in stored
    UTC text, or None if the window is empty.

    Bounds are whole microseconds (an exclusive bound excludes its microsecond, as
    `format_datetime` renders it); stored points are milliseconds, so every window is the
    half-open range of milliseconds [start, end) that holds the same points.
    """
    start = q.start if q.start_inclusive else q.start + ONE_TICK
    end = q.end + ONE_TICK if q.end_inclusive else q.end
    start_text = store.format_utc(_ceil_ms(_to_utc(start, zone)))
    end_text = store.format_utc(_ceil_ms(_to_utc(end, zone)))
    if start_text >= end_text:
        return None
    return "DateTime >= ? AND DateTime < ?", start_text, end_text


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}: not an IANA zone name") from error


def _ceil_ms(moment: datetime) -> datetime:
    """The first millisecond at or after `moment`."""
    floor = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return floor if floor == moment else floor + timedelta(milliseconds=1)


def _to_utc(local: datetime, zone: tzinfo | None) -> datetime:
    """A naive wall-clock time in `zone` as naive UTC.

    An ambiguous autumn time means its first occurrence (daylight time); a time in the spring
    gap is read with the offset before the change, i.e. moved forward (zoneinfo `fold=0`).
    """
    if zone is None:
        return local
    return local.replace(tzinfo=zone).astimezone(timezone.utc).replace(tzinfo=None)


def _existing_tags(conn: sqlite3.Connection, tags: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(TagName, TagType, wwTagKey) of the tags of `tags` that exist, by name."""
    names = list(dict.fromkeys(tags))
    found: list[tuple[str, int, int]] = []
    for offset in range(0, len(names), 500):
        part = names[offset : offset + 500]
        placeholders = ", ".join("?" * len(part))
        found.extend(
            conn.execute(
                f"SELECT TagName, TagType, wwTagKey FROM TagRef WHERE TagName IN ({placeholders})",
                part,
            )
        )
    # Python orders str by code point, which is SQLite's BINARY order of their UTF-8 bytes.
    return sorted(found)


def _tag_rows(
    conn: sqlite3.Connection,
    sql: str,
    tag: str,
    start_text: str,
    end_text: str,
    batch_rows: int,
) -> Iterator[list[tuple]]:
    # No explicit cursor.close(): the connection's close (in `_stored_points`) finalizes it,
    # and an abandoned generator may be finalized after that.
    cursor = conn.execute(sql, (tag, start_text, end_text))
    while chunk := cursor.fetchmany(batch_rows):
        yield chunk


def _initial_point(conn: sqlite3.Connection, tag: str, start_text: str) -> tuple | None:
    """The synthetic initial-value row of an inclusive start, or None if a point is at the start.

    Stored-point shape: (DateTime text, Value, VValue, Quality, QualityDetail, OpcQuality).
    """
    last = conn.execute(
        f"{_SELECT_POINTS} WHERE TagName = ? AND DateTime <= ? ORDER BY DateTime DESC LIMIT 1",
        (tag, start_text),
    ).fetchone()
    if last is None:
        return (start_text, None, None, BAD_QUALITY, NO_INITIAL_VALUE_DETAIL, 0)
    if last[0] == start_text:
        return None
    _, value, vvalue, _, detail, opc = last
    return (start_text, value, vvalue, INITIAL_VALUE_QUALITY, detail, opc)


def _prepend(first: tuple, chunks: Iterable[list[tuple]]) -> Iterator[list[tuple]]:
    yield [first]
    yield from chunks


_UNSET = object()


def _delta(chunks: Iterable[list[tuple]], value_index: int) -> Iterator[list[tuple]]:
    """Drops each point whose value equals the previously returned one (NULL equals NULL)."""
    previous: object = _UNSET
    for chunk in chunks:
        kept = []
        for point in chunk:
            value = point[value_index]
            if previous is _UNSET or value != previous:
                kept.append(point)
                previous = value
        if kept:
            yield kept


def _echo(q: HistoryQuery) -> tuple[str, str | None, str]:
    return (q.retrieval_mode, q.time_zone, q.version)


def _echo_columns(key: int, echo: tuple) -> tuple[tuple, tuple]:
    """The constant columns between OpcQuality and StartDateTime, and after StartDateTime."""
    mode, tz_name, version = echo
    middle = (
        key, None, None, _EDGE_DETECTION, mode,
        _TIME_DEADBAND, _VALUE_DEADBAND, tz_name, version, None,
        _TIMESTAMP_RULE, _INTERPOLATION_TYPE, _QUALITY_RULE, None, None,
        None, None,
    )  # fmt: skip
    tail = (None, None, _FILTER, _VALUE_SELECTOR, None, None, None, None)
    return middle, tail


def _rows_utc(chunk: list[tuple], tag: str, key: int, echo: tuple) -> list[tuple]:
    middle, tail = _echo_columns(key, echo)
    parse = datetime.fromisoformat
    return [
        ((moment := parse(d)), tag, v, vv, q, qd, oq, *middle, moment, *tail)
        for d, v, vv, q, qd, oq in chunk
    ]


def _rows_local(
    chunk: list[tuple], tag: str, key: int, echo: tuple, zone: tzinfo
) -> list[tuple]:
    middle, tail = _echo_columns(key, echo)
    parse = datetime.fromisoformat
    utc = timezone.utc
    return [
        (
            (moment := parse(d).replace(tzinfo=utc).astimezone(zone).replace(tzinfo=None, fold=0)),
            tag, v, vv, q, qd, oq, *middle, moment, *tail,
        )  # fmt: skip
        for d, v, vv, q, qd, oq in chunk
    ]


_NAIVE_MS = pa.timestamp("ms")
_KEY_INDEX, _START_INDEX = _ROW_LAYOUT.index("wwTagKey"), _ROW_LAYOUT.index("StartDateTime")

# The stored points of a JSON array of tags, as `_ARROW_POINT_SCHEMA`'s columns, for the ADBC
# driver. It types each column from its first batch, so a typed first row goes before the
# points ('' sorts first), whatever SQLite stores in a row and however many NULLs come first.
_SELECT_ARROW_POINTS = (
    "SELECT '' AS TagName, '' AS DateTime, 0.0 AS Value, '' AS VValue, 0 AS Quality, "
    "0 AS QualityDetail, 0 AS OpcQuality UNION ALL SELECT TagName, DateTime, "
    "CAST(Value AS REAL), CAST(VValue AS TEXT), CAST(Quality AS INTEGER), "
    "CAST(QualityDetail AS INTEGER), CAST(OpcQuality AS INTEGER) FROM Points "
    "WHERE TagName IN (SELECT value FROM json_each(?)) AND {condition} ORDER BY 1, 2"
)
_ARROW_POINT_SCHEMA = pa.schema([
    pa.field("TagName", pa.string()),
    pa.field("DateTime", pa.string()),
    *(HISTORY_ARROW_SCHEMA.field(name) for name in _ROW_LAYOUT[2:7]),
])
"""A stored point as `_SELECT_ARROW_POINTS` returns it: Value to OpcQuality typed as in History."""


def _arrow_batch(
    points: pa.RecordBatch, names: pa.Array, keys: pa.Array, echo: tuple, zone: tzinfo | None
) -> pa.RecordBatch:
    """One record batch of `_SELECT_ARROW_POINTS` rows; `keys` are the wwTagKeys of `names`."""
    points = points.cast(_ARROW_POINT_SCHEMA)
    tag = points.column(0)
    key = pc.take(keys, pc.index_in(tag, value_set=names))
    return _history_batch(_moment(points.column(1), zone), tag, points.columns[2:], key, echo)


def _moment(stored_text: pa.Array, zone: tzinfo | None) -> pa.Array:
    """Stored UTC text as the naive wall-clock time of `zone` (UTC if None)."""
    moment = stored_text.cast(_NAIVE_MS)
    if zone is not None:
        # Wall-clock time in the query's zone, as `_rows_local` (UTC -> local is never ambiguous).
        moment = pc.local_timestamp(moment.cast(pa.timestamp("ms", tz=zone.key)))
    return moment.cast(HISTORY_ARROW_SCHEMA.field("DateTime").type)


def _history_batch(
    moment: pa.Array, tag: pa.Array, stored: list[pa.Array], key: pa.Array, echo: tuple
) -> pa.RecordBatch:
    """The 33 columns of `History` from the varying ones (`stored`: Value to OpcQuality)."""
    rows = len(moment)
    middle, tail = _echo_columns(0, echo)
    constants = (*middle, None, *tail)
    columns = [moment, tag, *stored]
    for index in range(_KEY_INDEX, len(_ROW_LAYOUT)):
        if index == _KEY_INDEX:
            columns.append(key)
        elif index == _START_INDEX:
            columns.append(moment)
        else:
            kind = HISTORY_ARROW_SCHEMA.field(index).type
            value = constants[index - _KEY_INDEX]
            columns.append(pa.nulls(rows, kind) if value is None
                           else pa.repeat(pa.scalar(value, kind), rows))
    return pa.RecordBatch.from_arrays(columns, schema=HISTORY_ARROW_SCHEMA)


__all__ = ["EMULATED_MODES", "HistorianEmulator", "TagRow"]
