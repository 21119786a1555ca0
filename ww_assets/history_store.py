"""The project's tables in ClickHouse and the statements on them.

`replace_slice` is the heart of invariant §5.1: it inserts a slice's new rows under a fresh
`LoadId`, then deletes the slice's rows of older loads. A reader never sees a hole (new rows
land before old ones go), a plain `SELECT` sees exactly the new load once it returns, and an
interrupted load leaves only rows that the next load of the slice deletes (and that
ReplacingMergeTree would collapse onto the newest load meanwhile).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from ww_assets.history_query import naive_utc
from ww_assets.schema import HISTORY_ARROW_SCHEMA, HISTORY_COLUMNS, LOAD_ID_COLUMN
from ww_assets.warehouse import Warehouse, WarehouseConnection

HISTORY_TABLE = "WonderwareHistory"
TAGS_TABLE = "WonderwareTags"

TAG_CATALOG_SCHEMA = pa.schema(
    [
        pa.field("TagName", pa.string()),
        pa.field("Chunk", pa.string()),
        pa.field("TagType", pa.int32()),
        pa.field("Description", pa.string()),
        pa.field("MinEU", pa.float64()),
        pa.field("MaxEU", pa.float64()),
        pa.field("Unit", pa.string()),
        pa.field("Active", pa.uint8()),
        pa.field("FirstSeen", pa.timestamp("ms", tz="UTC")),
        pa.field("UpdatedAt", pa.timestamp("ms", tz="UTC")),
    ]
)


def ensure_schema(conn: WarehouseConnection, database: str) -> None:
    """Create the database and tables if missing (idempotent)."""
    conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    columns = ",\n    ".join(
        f"`{c.name}` {c.clickhouse_type} {c.codec}".rstrip() for c in HISTORY_COLUMNS
    )
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{HISTORY_TABLE} (
    {columns},
    `{LOAD_ID_COLUMN}` UInt64,
    INDEX LoadIdRange {LOAD_ID_COLUMN} TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree({LOAD_ID_COLUMN})
PARTITION BY toYYYYMM(DateTime)
ORDER BY (TagName, DateTime)
SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1"""
    )
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{TAGS_TABLE} (
    TagName String,
    Chunk LowCardinality(String),
    TagType Int32,
    Description Nullable(String),
    MinEU Nullable(Float64),
    MaxEU Nullable(Float64),
    Unit Nullable(String),
    Active UInt8,
    FirstSeen DateTime64(3, 'UTC'),
    UpdatedAt DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(UpdatedAt)
ORDER BY TagName"""
    )


# ---------------------------------------------------------------- tag catalog


def read_catalog(conn: WarehouseConnection, database: str) -> pa.Table:
    """The tag catalog: one row per tag ever seen, with its chunk."""
    return conn.query(
        f"SELECT * FROM {database}.{TAGS_TABLE} FINAL ORDER BY Chunk, TagName"
    ).cast(TAG_CATALOG_SCHEMA)


def write_catalog(conn: WarehouseConnection, database: str, rows: pa.Table) -> None:
    conn.insert(f"{database}.{TAGS_TABLE}", rows.cast(TAG_CATALOG_SCHEMA))


def chunk_tags(conn: WarehouseConnection, database: str, chunk: str) -> list[str]:
    table = conn.query(
        f"SELECT TagName FROM {database}.{TAGS_TABLE} FINAL "
        "WHERE Chunk = {chunk:String} AND Active = 1 ORDER BY TagName",
        {"chunk": chunk},
    )
    return table.column("TagName").to_pylist()


def active_tags_by_chunk(conn: WarehouseConnection, database: str) -> dict[str, list[str]]:
    """Every chunk of the catalog with its active tags; a chunk whose tags are all retired
    has an empty list (it is known, with nothing left to copy)."""
    table = conn.query(
        f"SELECT Chunk, groupArrayIf(TagName, Active = 1) AS tags FROM "
        f"(SELECT Chunk, TagName, Active FROM {database}.{TAGS_TABLE} FINAL "
        "ORDER BY TagName) GROUP BY Chunk ORDER BY Chunk"
    )
    return {row["Chunk"]: list(row["tags"]) for row in table.to_pylist()}


def read_active_tags(warehouse: Warehouse) -> dict[str, list[str]]:
    """Every chunk's active tags, as `active_tags_by_chunk` (one session; the schema is
    created if missing)."""
    with warehouse.connect() as conn:
        ensure_schema(conn, warehouse.database)
        return active_tags_by_chunk(conn, warehouse.database)


def tag_watermarks(
    conn: WarehouseConnection, database: str, since: datetime
) -> dict[str, datetime]:
    """Each tag's newest point at or after `since` (tags with none are absent)."""
    table = conn.query(
        f"SELECT TagName, max(DateTime) AS newest FROM {database}.{HISTORY_TABLE} "
        "WHERE DateTime >= {since:DateTime64(3, 'UTC')} GROUP BY TagName",
        {"since": naive_utc(since)},
    )
    return {row["TagName"]: row["newest"] for row in table.to_pylist()}


# ---------------------------------------------------------------- slice replacement

SLICE = (
    "TagName IN {tags:Array(String)} AND DateTime >= {start:DateTime64(3, 'UTC')} "
    "AND DateTime < {end:DateTime64(3, 'UTC')}"
)
"""The rows of a slice (`tags` in [start, end)); its parameters come from `slice_params`."""


def slice_params(tags: Iterable[str], start: datetime, end: datetime) -> dict[str, object]:
    return {"tags": list(tags), "start": naive_utc(start), "end": naive_utc(end)}


def with_load_id(table: pa.Table, load_id: int) -> pa.Table:
    """`table` with the `LoadId` column that marks the load its rows belong to."""
    return table.append_column(
        LOAD_ID_COLUMN, pa.repeat(pa.scalar(load_id, pa.uint64()), table.num_rows)
    )


@dataclass
class SliceStats:
    rows: int = 0
    min_time: datetime | None = None
    max_time: datetime | None = None
    tags_with_rows: set[str] = field(default_factory=set)
    seconds: float = 0.0
    rejected: int = 0
    """Rows the source returned without a DateTime: they cannot be stored."""

    def merge(self, part: SliceStats) -> None:
        """Add `part` (another slice, or a group of this one) into these figures."""
        self.rows += part.rows
        self.rejected += part.rejected
        self.tags_with_rows |= part.tags_with_rows
        for attr, pick in (("min_time", min), ("max_time", max)):
            value = getattr(part, attr)
            if value is not None:
                current = getattr(self, attr)
                setattr(self, attr, value if current is None else pick(current, value))


def replace_slice(
    warehouse: Warehouse,
    tags: list[str],
    start: datetime,
    end: datetime,
    batches: Iterable[pa.RecordBatch],
    *,
    insert_rows: int | None = None,
    on_batch: Callable[[SliceStats], None] | None = None,
) -> SliceStats:
    """Make the rows of `tags` in [start, end) exactly those in `batches`.

    Rows outside [start, end) or of other tags are dropped before insert (the window is the
    slice's contract, whatever the source returned). Rows are streamed into inserts of about
    `insert_rows` rows each (the warehouse's statement size if None; memory stays bounded),
    all in one warehouse session that opens once the source has answered (a slow historian
    does not hold embedded ClickHouse's lock while it starts) and closes after the delete;
    `on_batch` sees the figures after each insert. A load that fails before its delete
    deletes the rows it had inserted: the slice is left as it was.
    """
    started = time.monotonic()
    stats = SliceStats()
    table = f"{warehouse.database}.{HISTORY_TABLE}"
    clipped = _clip(batches, tags, start, end, stats)
    first = next(clipped, None)
    where = f"{SLICE} AND {LOAD_ID_COLUMN} < {{load_id:UInt64}}"
    with warehouse.connect() as conn:
        # Taken once the session is ours: a load that waited for embedded ClickHouse's lock
        # gets a newer id than the load it waited for, so its delete removes that load's rows.
        load_id = time.time_ns()
        params = {**slice_params(tags, start, end), "load_id": load_id}
        try:
            if first is not None:
                pending = (with_load_id(t, load_id) for t in itertools.chain([first], clipped))
                while conn.insert_stream(table, pending, insert_rows):
                    if on_batch:
                        on_batch(stats)
            older = conn.query(f"SELECT count() AS n FROM {table} WHERE {where}", params)
        except BaseException as error:
            if first is not None:
                _discard_load(conn, table, params, error)
            raise
        # A failed delete is not undone: whatever part of it ran, the load's own rows are
        # then the only complete copy of the slice.
        if older.column("n")[0].as_py():
            # Patch-part deletes (lightweight updates) cost about as much as an insert; a
            # classic lightweight delete rewrites the row mask of every part it touches.
            conn.command(
                f"DELETE FROM {table} WHERE {where} "
                "SETTINGS lightweight_delete_mode = 'lightweight_update'",
                params,
            )
    stats.seconds = time.monotonic() - started
    return stats


def _discard_load(
    conn: WarehouseConnection, table: str, params: dict[str, object], failure: BaseException
) -> None:
    """Delete the rows a failed load inserted before it failed: the slice's older rows are
    still there (they go only after the last insert), so the slice is left as it was. A sync
    window's watermarks would otherwise move past those rows, leaving two copies of a key.
    When the warehouse itself fails here, `failure`'s message says so (the run shows it) and
    the next load of the slice replaces the rows."""
    try:
        conn.command(
            f"DELETE FROM {table} WHERE {SLICE} AND {LOAD_ID_COLUMN} = {{load_id:UInt64}} "
            "SETTINGS lightweight_delete_mode = 'lightweight_update'",
            params,
        )
    except Exception as error:
        failure.add_note(
            f"The rows this load inserted could not be deleted ({error}): until the slice is "
            "loaded again, a plain SELECT sees them beside the previous load's."
        )


def _clip(
    batches: Iterable[pa.RecordBatch],
    tags: list[str],
    start: datetime,
    end: datetime,
    stats: SliceStats,
) -> Iterator[pa.Table]:
    """The rows of `batches` inside the slice, counted into `stats` as they are passed on."""
    time_type = HISTORY_ARROW_SCHEMA.field("DateTime").type
    lo, hi = (pa.scalar(naive_utc(t).replace(tzinfo=timezone.utc), time_type) for t in (start, end))
    wanted, wanted_array = set(tags), pa.array(tags, pa.string())
    for batch in batches:
        table = pa.Table.from_batches([batch]).cast(HISTORY_ARROW_SCHEMA)
        times = table["DateTime"]
        stats.rejected += times.null_count
        # The usual batch lies inside the slice: its bounds and tags tell, without a mask
        # (filtering copies every column), and they are what `stats` counts anyway.
        low, high = pc.min_max(times).values()
        names = pc.unique(table["TagName"]).to_pylist()
        inside = (times.null_count == 0 and low.is_valid and lo.value <= low.value
                  and high.value < hi.value and wanted.issuperset(names))  # fmt: skip
        if not inside:
            table = table.filter(
                pc.and_(
                    pc.and_(pc.greater_equal(times, lo), pc.less(times, hi)),
                    pc.is_in(table["TagName"], value_set=wanted_array),
                )
            )
            if not table.num_rows:
                continue
            low, high = pc.min_max(table["DateTime"]).values()
            names = pc.unique(table["TagName"]).to_pylist()
        stats.merge(SliceStats(rows=table.num_rows, min_time=low.as_py(), max_time=high.as_py(),
                               tags_with_rows=set(names)))  # fmt: skip
        yield table


# ---------------------------------------------------------------- reading back


def slice_row_count(
    conn: WarehouseConnection, database: str, tags: list[str], start: datetime, end: datetime
) -> int:
    table = conn.query(
        f"SELECT count() AS n FROM {database}.{HISTORY_TABLE} WHERE {SLICE}",
        slice_params(tags, start, end),
    )
    return int(table.column("n")[0].as_py())


def status(conn: WarehouseConnection, database: str) -> dict[str, object]:
    """What landed: the figures of `ww status` (the replaced system's status API, plus lag and
    per-chunk coverage)."""
    totals = conn.query(
        "SELECT uniqExact(TagName) AS total_tags, count() AS total_data_points, "
        "min(DateTime) AS oldest_data, max(DateTime) AS newest_data "
        f"FROM {database}.{HISTORY_TABLE}"
    ).to_pylist()[0]
    per_chunk = conn.query(
        "SELECT c.Chunk AS chunk, uniqExact(c.TagName) AS tags, countIf(h.TagName != '') AS rows, "
        "uniqExactIf(toDate(h.DateTime), h.TagName != '') AS days, "
        "minIf(h.DateTime, h.TagName != '') AS oldest, maxIf(h.DateTime, h.TagName != '') AS newest "
        f"FROM (SELECT TagName, Chunk FROM {database}.{TAGS_TABLE} FINAL WHERE Active = 1) AS c "
        f"LEFT JOIN {database}.{HISTORY_TABLE} AS h ON h.TagName = c.TagName "
        "GROUP BY c.Chunk ORDER BY c.Chunk"
    ).to_pylist()
    rows = int(totals["total_data_points"])
    oldest = totals["oldest_data"] if rows else None
    newest = totals["newest_data"] if rows else None
    now = datetime.now(timezone.utc)
    return {
        "total_tags": int(totals["total_tags"]),
        "total_data_points": rows,
        "oldest_data": oldest.isoformat() if oldest else None,
        "newest_data": newest.isoformat() if newest else None,
        "data_span_days": round((newest - oldest).total_seconds() / 86400, 3) if rows else None,
        "lag_seconds": round((now - newest).total_seconds(), 1) if newest else None,
        "chunks": [
            {
                "chunk": c["chunk"],
                "tags": int(c["tags"]),
                "rows": int(c["rows"]),
                "days": int(c["days"]),
                "oldest": c["oldest"].isoformat() if c["rows"] else None,
                "newest": c["newest"].isoformat() if c["rows"] else None,
            }
            for c in per_chunk
        ],
    }


# ---------------------------------------------------------------- the sync: after each watermark

AFTER_WATERMARKS = (
    "TagName IN {tags:Array(String)} AND DateTime > {lowest:DateTime64(3, 'UTC')} "
    "AND DateTime < {end:DateTime64(3, 'UTC')} AND toUnixTimestamp64Milli(DateTime) > "
    "arrayElement({after_ms:Array(Int64)}, indexOf({tags:Array(String)}, TagName))"
)
"""The rows of each tag after its own watermark, before `end` (parameters: `after_params`)."""


def after_params(after: Mapping[str, datetime], end: datetime) -> dict[str, object]:
    tags = sorted(after)
    return {
        "tags": tags,
        "after_ms": [_epoch_ms(after[t]) for t in tags],
        "lowest": naive_utc(min(after.values())),
        "end": naive_utc(end),
    }


def _epoch_ms(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return round(aware.timestamp() * 1000)


def append_after(
    warehouse: Warehouse,
    after: Mapping[str, datetime],
    end: datetime,
    batches: Iterable[pa.RecordBatch],
) -> SliceStats:
    """Make each tag's rows in (after[tag], end) exactly its rows in `batches`, in one
    warehouse session: the sync's whole write.

    Rows at or before a tag's own watermark (a read shared by tags with different watermarks
    returns some) and rows of other tags are dropped before insert. All rows go in under one
    `LoadId`; then one count, and a delete only when a row of an older load lies after a
    watermark (a load that ran between the sync's watermark read and this insert). The
    session opens once the source has answered, and only if it returned a row. A failed
    insert deletes what this load inserted.
    """
    started = time.monotonic()
    stats = SliceStats()
    table = f"{warehouse.database}.{HISTORY_TABLE}"
    clipped = _clip_after(batches, after, end, stats)
    first = next(clipped, None)
    if first is None:
        stats.seconds = time.monotonic() - started
        return stats
    where = f"{AFTER_WATERMARKS} AND {LOAD_ID_COLUMN} < {{load_id:UInt64}}"
    with warehouse.connect() as conn:
        load_id = time.time_ns()
        params = {**after_params(after, end), "load_id": load_id}
        try:
            pending = (with_load_id(t, load_id) for t in itertools.chain([first], clipped))
            while conn.insert_stream(table, pending):
                pass
            older = conn.query(f"SELECT count() AS n FROM {table} WHERE {where}", params)
        except BaseException as error:
            try:
                conn.command(
                    f"DELETE FROM {table} WHERE {AFTER_WATERMARKS} "
                    f"AND {LOAD_ID_COLUMN} = {{load_id:UInt64}} "
                    "SETTINGS lightweight_delete_mode = 'lightweight_update'",
                    params,
                )
            except Exception as undo:
                error.add_note(f"The rows this sync inserted could not be deleted ({undo}).")
            raise
        if older.column("n")[0].as_py():
            conn.command(
                f"DELETE FROM {table} WHERE {where} "
                "SETTINGS lightweight_delete_mode = 'lightweight_update'",
                params,
            )
    stats.seconds = time.monotonic() - started
    return stats


def _clip_after(
    batches: Iterable[pa.RecordBatch],
    after: Mapping[str, datetime],
    end: datetime,
    stats: SliceStats,
) -> Iterator[pa.Table]:
    """The rows of `batches` after their tag's watermark and before `end`, counted."""
    time_type = HISTORY_ARROW_SCHEMA.field("DateTime").type
    tags = sorted(after)
    names = pa.array(tags, pa.string())
    marks = pa.array(
        [naive_utc(after[t]).replace(tzinfo=timezone.utc) for t in tags], time_type
    )
    hi = pa.scalar(naive_utc(end).replace(tzinfo=timezone.utc), time_type)
    for batch in batches:
        table = pa.Table.from_batches([batch]).cast(HISTORY_ARROW_SCHEMA)
        stats.rejected += table["DateTime"].null_count
        index = pc.index_in(table["TagName"], value_set=names)
        own = pc.take(marks, index)
        keep = pc.and_(pc.greater(table["DateTime"], own), pc.less(table["DateTime"], hi))
        table = table.filter(pc.fill_null(keep, False))
        if not table.num_rows:
            continue
        low, high = pc.min_max(table["DateTime"]).values()
        stats.merge(SliceStats(rows=table.num_rows, min_time=low.as_py(), max_time=high.as_py(),
                               tags_with_rows=set(pc.unique(table["TagName"]).to_pylist())))  # fmt: skip
        yield table


def counts_by_bucket(
    conn: WarehouseConnection,
    database: str,
    tags: list[str],
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> dict[tuple[str, datetime], int]:
    """Rows per (tag, bucket start) in [start, end), buckets of `bucket_s` seconds from the
    epoch, as a plain SELECT sees them."""
    table = conn.query(
        "SELECT TagName, intDiv(toUnixTimestamp64Milli(DateTime), {ms:Int64}) AS b, "
        f"count() AS n FROM {database}.{HISTORY_TABLE} WHERE {SLICE} GROUP BY TagName, b",
        {**slice_params(tags, start, end), "ms": int(bucket_s) * 1000},
    )
    return {
        (r["TagName"], datetime.fromtimestamp(r["b"] * bucket_s, timezone.utc)): int(r["n"])
        for r in table.to_pylist()
    }
