"""The project's tables in ClickHouse and the statements on them.

Readers see one row per point at every moment because they never read the
stored rows directly: `WonderwareHistory` is a view of `WonderwareHistoryVersions FINAL`, a
`ReplacingMergeTree(LoadId, IsDeleted)` where every load inserts its rows under a fresh
`LoadId` and nothing is ever deleted. For each (TagName, DateTime) a reader sees the row of the
newest load that wrote it, unless that load marked it deleted. A load (`SliceLoad`) is:

1. `begin`: a load id from the server (`new_load_id`), ordered after every load registered
   before it whatever the hosts' clocks say, and registered in `WonderwareLoads`;
2. `insert`: its rows, in as many statements as it takes; each key it writes switches to the
   new row at once (no moment with two copies or none);
3. `finish`: one `INSERT ... SELECT` of a deletion marker for every key of the slice whose
   newest row is older than this load (points the source no longer has).

A load that fails or is killed anywhere leaves each key with exactly one visible row (its own
for the keys it wrote, the previous load's for the rest): no hole, no double, with or without
a merge in between (a merge keeps the newest row of each key, which is the one readers see);
the next load of the slice makes it exact. Two loads racing over one slice: for every key the
newer load wins, whatever the interleaving. Why this design: docs/reliability.md.
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
from ww_assets.warehouse import Warehouse, WarehouseConnection, WarehouseError

HISTORY_TABLE = "WonderwareHistory"
"""What readers query: one row per point (a view over `HISTORY_STORE` with `FINAL`)."""
HISTORY_STORE = "WonderwareHistoryVersions"
"""Every load's rows; loads write here, readers never read it directly."""
HISTORY_VIEW_COLUMNS = ", ".join(f"`{c.name}`" for c in HISTORY_COLUMNS) + f", `{LOAD_ID_COLUMN}`"
"""The columns readers see: the 33 History columns and the load that wrote the row."""
TAGS_TABLE = "WonderwareTags"
LOADS_TABLE = "WonderwareLoads"
"""One row per load begun: its id, what it replaces, when (`new_load_id` orders by it)."""
DELETED_COLUMN = "IsDeleted"
FINAL_SETTINGS = "optimize_move_to_prewhere_if_final = 0"
"""On a statement that filters `FINAL` on a column outside the key (`LoadId`): the filter must
see each key's newest row only. Moved to PREWHERE it would see older rows too, and a load's
deletion markers would hide keys it had just written."""

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


SCHEMA_TABLE = "WonderwareSchema"
SCHEMA_VERSION = 2
"""The schema this code reads and writes, recorded in `WonderwareSchema` by `init_schema`.
1: `WonderwareHistory` and `WonderwareHistoryAggregated` were tables (no version recorded);
2: they are views of version stores, with the load register."""


class SchemaError(WarehouseError):
    """The warehouse has no schema or another version than this code's: `ww init` creates or
    migrates it."""


def schema_version(conn: WarehouseConnection, database: str) -> int | None:
    """The recorded schema version; 1 for the layout from before versions were recorded,
    None when there is no schema. Reads only."""
    tables = set(conn.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND name IN ({schema:String}, {history:String})",
        {"db": database, "schema": SCHEMA_TABLE, "history": HISTORY_TABLE},
    ).column("name").to_pylist())  # fmt: skip
    if SCHEMA_TABLE in tables:
        found = conn.query(f"SELECT max(Version) AS v FROM {database}.{SCHEMA_TABLE}")
        return int(found.column("v")[0].as_py())
    return 1 if HISTORY_TABLE in tables else None


def ensure_schema(conn: WarehouseConnection, database: str) -> None:
    """Check that the warehouse has this code's schema (one read, no DDL). Embedded chDB, which
    has no separate administrator, gets it created or migrated on first use; a server is
    refused until `ww init` has run, so runs, checks and the CLI need no DDL rights there."""
    version = schema_version(conn, database)
    if version == SCHEMA_VERSION:
        return
    if getattr(conn, "creates_schema", False):
        init_schema(conn, database)
        return
    raise SchemaError(schema_problem(database, version))


def schema_problem(database: str, version: int | None) -> str:
    """What is wrong with a schema of `version` (not this code's), and what to do."""
    if version is None:
        return (f"database {database} has no ww_assets schema: run `ww init` once, as a user "
                "allowed to create tables")  # fmt: skip
    if version > SCHEMA_VERSION:
        return (f"database {database} has schema version {version}, newer than this "
                f"ww_assets's {SCHEMA_VERSION}: upgrade ww_assets")  # fmt: skip
    return (f"database {database} has schema version {version}; this ww_assets needs version "
            f"{SCHEMA_VERSION}: run `ww init` to migrate it")  # fmt: skip


def init_schema(conn: WarehouseConnection, database: str) -> int | None:
    """The explicit schema step (`ww init`): create what is missing, migrate an older layout,
    record `SCHEMA_VERSION`. Idempotent; returns the version found before."""
    before = schema_version(conn, database)
    if before is not None and before > SCHEMA_VERSION:
        raise SchemaError(schema_problem(database, before))
    create_schema(conn, database)
    if before != SCHEMA_VERSION:
        conn.command(
            f"INSERT INTO {database}.{SCHEMA_TABLE} (Version) VALUES ({{v:UInt32}})",
            {"v": SCHEMA_VERSION},
        )
    return before


def create_schema(conn: WarehouseConnection, database: str) -> None:
    """The database and every table and view, if missing (DDL only, idempotent); a
    `WonderwareHistory` stored as a table (the layout before readers went through a view) is
    moved into the store."""
    conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    conn.command(
        f"CREATE TABLE IF NOT EXISTS {database}.{SCHEMA_TABLE} (Version UInt32, "
        "Applied DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree() ORDER BY Applied"
    )
    columns = ",\n    ".join(
        f"`{c.name}` {c.clickhouse_type} {c.codec}".rstrip() for c in HISTORY_COLUMNS
    )
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{HISTORY_STORE} (
    {columns},
    `{LOAD_ID_COLUMN}` UInt64,
    `{DELETED_COLUMN}` UInt8 DEFAULT 0,
    INDEX LoadIdRange {LOAD_ID_COLUMN} TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree({LOAD_ID_COLUMN}, {DELETED_COLUMN})
PARTITION BY toYYYYMM(DateTime)
ORDER BY (TagName, DateTime)"""
    )
    ensure_loads_table(conn, database)
    ensure_view(conn, database, HISTORY_TABLE, HISTORY_STORE, HISTORY_VIEW_COLUMNS)
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
    ensure_rollup_schema(conn, database)


ROLLUP_TABLE = "WonderwareHistoryAggregated"
"""What readers query: one row per tag and minute (a view over `ROLLUP_STORE` with `FINAL`)."""
ROLLUP_STORE = "WonderwareHistoryAggregatedVersions"
ROLLUP_COLUMNS = ("TagName", "minute_timestamp", "first_value", "avg_value", "min_value",
                  "max_value", "count", "avg_quality", "min_quality", "LoadId")  # fmt: skip


def ensure_rollup_schema(conn: WarehouseConnection, database: str) -> None:
    """`WonderwareHistoryAggregated`: the replaced system's rollup columns and `LoadId`, a view
    of `WonderwareHistoryAggregatedVersions FINAL`, loaded as the raw points are
    (`rollup_sql.RollupLoad`): a day is replaced without a moment of two copies or none. DDL
    only (`create_schema` runs it)."""
    conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{ROLLUP_STORE} (
    TagName String,
    minute_timestamp DateTime('UTC'),
    first_value Nullable(Float64),
    avg_value Nullable(Float64),
    min_value Nullable(Float64),
    max_value Nullable(Float64),
    count UInt64,
    avg_quality Nullable(Float64),
    min_quality Nullable(Int32),
    LoadId UInt64,
    {DELETED_COLUMN} UInt8 DEFAULT 0
) ENGINE = ReplacingMergeTree(LoadId, {DELETED_COLUMN})
PARTITION BY toYYYYMM(minute_timestamp)
ORDER BY (TagName, minute_timestamp)"""
    )
    ensure_loads_table(conn, database)
    ensure_view(conn, database, ROLLUP_TABLE, ROLLUP_STORE, ", ".join(ROLLUP_COLUMNS))


def ensure_view(
    conn: WarehouseConnection, database: str, view: str, store: str, columns: str
) -> None:
    """`view` as readers query it: `columns` of `store FINAL`. An older layout's table of that
    name has its rows moved into `store` first (its columns are the store's, without the
    deletion marker), and its newest load id registered, so that new loads are newer (its ids
    came from the hosts' clocks). Between the table's drop and the view's creation a reader
    finds neither."""
    found = conn.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        {"db": database, "name": view},
    )
    if found.num_rows and found.column("engine")[0].as_py() != "View":
        old = f"{database}.{view}"
        conn.command(f"INSERT INTO {database}.{store} ({columns}) SELECT {columns} FROM {old}")
        conn.command(
            f"INSERT INTO {database}.{LOADS_TABLE} (LoadId, Target, Tags, Start, End) "
            "SELECT max(LoadId), {target:String}, 0, 0, 0 FROM " + old, {"target": store}
        )
        conn.command(f"DROP TABLE {old}")
    conn.command(
        f"CREATE VIEW IF NOT EXISTS {database}.{view} AS SELECT {columns} "
        f"FROM {database}.{store} FINAL"
    )


def ensure_loads_table(conn: WarehouseConnection, database: str) -> None:
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{LOADS_TABLE} (
    LoadId UInt64,
    Target LowCardinality(String),
    Tags UInt32,
    Start DateTime64(3, 'UTC'),
    End DateTime64(3, 'UTC'),
    Registered DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree()
ORDER BY LoadId
TTL toDateTime(Registered) + INTERVAL 30 DAY"""
    )


def new_load_id(
    conn: WarehouseConnection, database: str, target: str, tags: int, start: datetime, end: datetime
) -> int:
    """A fresh load id, registered in `WonderwareLoads`: the server's time in ns, or just past
    the newest id registered if that is later (a server clock stepped back, or another node's
    ahead), plus a random part so that two loads that begin at once differ. Every load begun
    after this one registered gets a larger id, whatever the clocks of the hosts that run
    them; two that begin at once are ordered one way or the other, for every key alike."""
    table = conn.query(
        "SELECT greatest(toUnixTimestamp64Nano(now64(9)), "
        f"ifNull((SELECT max(LoadId) FROM {database}.{LOADS_TABLE}), 0) + 1000) "
        "+ rand() % 1000 AS id"
    )
    load_id = int(table.column("id")[0].as_py())
    conn.command(
        f"INSERT INTO {database}.{LOADS_TABLE} (LoadId, Target, Tags, Start, End) VALUES "
        "({id:UInt64}, {target:String}, {tags:UInt32}, {start:DateTime64(3, 'UTC')}, "
        "{end:DateTime64(3, 'UTC')})",
        {"id": load_id, "target": target, "tags": tags,
         "start": naive_utc(start), "end": naive_utc(end)},
    )  # fmt: skip
    return load_id


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
    checked, `ensure_schema`)."""
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


class SliceLoad:
    """One load of the slice `tags` in [start, end) on an open session, statement by statement
    (`replace_slice` runs it; tests interleave two of them on one session and read between
    statements). Every statement is one the server path sends too. `where` with `params`
    narrows the slice (the sync's rows after each tag's watermark, `AFTER_WATERMARKS`)."""

    def __init__(self, conn: WarehouseConnection, database: str, tags: list[str],
                 start: datetime, end: datetime, where: str = SLICE,
                 params: Mapping[str, object] | None = None) -> None:  # fmt: skip
        self.conn, self.database, self.tags = conn, database, tags
        self.start, self.end = start, end
        self.where = where
        self.params = dict(params) if params is not None else slice_params(tags, start, end)
        self.load_id = 0

    def begin(self) -> int:
        self.load_id = new_load_id(self.conn, self.database, HISTORY_STORE, len(self.tags),
                                   self.start, self.end)  # fmt: skip
        return self.load_id

    def insert(self, tables: Iterator[pa.Table], rows: int | None = None) -> int:
        """One INSERT of the rows pulled from `tables` (see `insert_stream`); 0 at their end."""
        pending = (with_load_id(t, self.load_id) for t in tables)
        return self.conn.insert_stream(f"{self.database}.{HISTORY_STORE}", pending, rows)

    def finish(self) -> None:
        """Mark deleted every key of the slice whose newest row is older than this load."""
        keys = "TagName, DateTime"
        self.conn.command(
            f"INSERT INTO {self.database}.{HISTORY_STORE} ({keys}, {LOAD_ID_COLUMN}, "
            f"{DELETED_COLUMN}) SELECT {keys}, {{load_id:UInt64}}, 1 "
            f"FROM {self.database}.{HISTORY_STORE} FINAL "
            f"WHERE {self.where} AND {LOAD_ID_COLUMN} < {{load_id:UInt64}} "
            f"SETTINGS {FINAL_SETTINGS}",
            {**self.params, "load_id": self.load_id},
        )


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
    """Make the rows of `tags` in [start, end) exactly those in `batches`, as readers see them.

    Rows outside [start, end) or of other tags are dropped before insert (the window is the
    slice's contract, whatever the source returned). Rows are streamed into inserts of about
    `insert_rows` rows each (the warehouse's statement size if None; memory stays bounded),
    all in one warehouse session that opens once the source has answered (a slow historian
    does not hold embedded ClickHouse's lock while it starts); `on_batch` sees the figures
    after each insert. A load that fails part way leaves every point of the slice visible
    once (its own rows for the points it wrote); the next load of the slice makes it exact.
    """
    started = time.monotonic()
    stats = SliceStats()
    clipped = _clip(batches, tags, start, end, stats)
    first = next(clipped, None)
    with warehouse.connect() as conn:
        # Taken once the session is ours: a load that waited for embedded ClickHouse's lock
        # gets a newer id than the load it waited for, so its rows win.
        load = SliceLoad(conn, warehouse.database, tags, start, end)
        load.begin()
        if first is not None:
            pending = itertools.chain([first], clipped)
            while load.insert(pending, insert_rows):
                if on_batch:
                    on_batch(stats)
        load.finish()
    stats.seconds = time.monotonic() - started
    return stats


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
    warehouse session: the sync's whole write, a `SliceLoad` over `AFTER_WATERMARKS`.

    Rows at or before a tag's own watermark (a read shared by tags with different watermarks
    returns some) and rows of other tags are dropped before insert. The session opens once
    the source has answered, and only if it returned a row. A load that ran between the
    sync's watermark read and this insert loses to it point by point; a sync that fails part
    way leaves one visible row per point (its own for the points it wrote, a prefix of each
    tag's), and the next sync reads on from there.
    """
    started = time.monotonic()
    stats = SliceStats()
    clipped = _clip_after(batches, after, end, stats)
    first = next(clipped, None)
    if first is None:
        stats.seconds = time.monotonic() - started
        return stats
    with warehouse.connect() as conn:
        load = SliceLoad(conn, warehouse.database, sorted(after), min(after.values()), end,
                         AFTER_WATERMARKS, after_params(after, end))  # fmt: skip
        load.begin()
        pending = itertools.chain([first], clipped)
        while load.insert(pending):
            pass
        load.finish()
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
