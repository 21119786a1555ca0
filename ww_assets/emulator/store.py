"""The emulator's SQLite storage: AVEVA's Runtime tag tables and the stored points.

Tables, under the historian's own names and columns (65431, 1220349, 65357), so that catalog
T-SQL written for AVEVA runs here unchanged (and fails here where it would fail there):

- `Tag(TagName PRIMARY KEY, IOServerKey, StorageNodeKey, wwTagKey, TopicKey, Description,
  AcquisitionType, StorageType, ...)`: AcquisitionType 3 is the system driver (the `Sys*` tags).
- `TagRef(wwDomainTagKey PRIMARY KEY, wwTagKey, ServerKey, TagName, TagType)`.
- `AnalogTag(TagName PRIMARY KEY, EUKey, MinEU, MaxEU, MinRaw, MaxRaw, Scaling, RawType, ...)`,
  `EngineeringUnit(EUKey PRIMARY KEY, Unit, ...)`, `DiscreteTag(TagName, ...)`,
  `StringTag(TagName, MaxLength, ...)`.
- `Points(TagName, DateTime, Value, VValue, Quality, QualityDetail, OpcQuality)`, `DateTime` in
  UTC as `YYYY-MM-DD HH:MM:SS.fff`: the stored points, which `History` is answered from.

`Points` is keyed by (TagName, DateTime) and stored clustered on that key (`WITHOUT ROWID`):
one tag's points in a window are one contiguous range of the B-tree, which is what every read
asks for. A second point at an existing (TagName, DateTime) replaces the first, as an update
does in the historian (`wwVersion = 'Latest'`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ww_assets.history_query import ACQUIRED_BY_SYSTEM_DRIVER, TAG_TYPES

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for a lock: a live simulator writes while the pipeline reads."""

INSERT_BATCH_ROWS = 50_000

ANALOG, DISCRETE, STRING = TAG_TYPES["analog"], TAG_TYPES["discrete"], TAG_TYPES["string"]

IO_SERVER = 1
"""`Tag.AcquisitionType` of a tag acquired through an I/O Server."""
SYSTEM_DRIVER = ACQUIRED_BY_SYSTEM_DRIVER

DELTA_STORAGE = 2
"""`Tag.StorageType` of every emulated tag."""

STORAGE_NODE_KEY = 1
SERVER_KEY = 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS Tag ("
    "TagName TEXT PRIMARY KEY, IOServerKey INTEGER, StorageNodeKey INTEGER NOT NULL, "
    "wwTagKey INTEGER NOT NULL UNIQUE, TopicKey INTEGER, Description TEXT, "
    "AcquisitionType INTEGER NOT NULL, StorageType INTEGER NOT NULL, AcquisitionRate INTEGER, "
    "StorageRate INTEGER, ItemName TEXT, TimeDeadband INTEGER, CreatedBy TEXT, DateCreated TEXT)",
    "CREATE TABLE IF NOT EXISTS TagRef ("
    "wwDomainTagKey INTEGER PRIMARY KEY, wwTagKey INTEGER NOT NULL, ServerKey INTEGER NOT NULL, "
    "TagName TEXT NOT NULL UNIQUE, TagType INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS EngineeringUnit ("
    "EUKey INTEGER PRIMARY KEY, Unit TEXT NOT NULL UNIQUE, DefaultTagRate INTEGER, "
    "IntegralDivisor REAL)",
    "CREATE TABLE IF NOT EXISTS AnalogTag ("
    "TagName TEXT PRIMARY KEY, EUKey INTEGER, MinEU REAL, MaxEU REAL, MinRaw REAL, MaxRaw REAL, "
    "Scaling INTEGER, RawType INTEGER, ValueDeadband REAL, IntegerSize INTEGER, "
    "SignedInteger INTEGER, RateDeadband REAL, InterpolationType INTEGER, RolloverValue REAL)",
    "CREATE TABLE IF NOT EXISTS DiscreteTag (TagName TEXT PRIMARY KEY, MessageKey INTEGER)",
    "CREATE TABLE IF NOT EXISTS StringTag ("
    "TagName TEXT PRIMARY KEY, MaxLength INTEGER, ApplyFilter INTEGER, DoubleByte INTEGER)",
    "CREATE TABLE IF NOT EXISTS Points ("
    "TagName TEXT NOT NULL, DateTime TEXT NOT NULL, Value REAL, VValue TEXT, "
    "Quality INTEGER, QualityDetail INTEGER, OpcQuality INTEGER, "
    "PRIMARY KEY (TagName, DateTime)) WITHOUT ROWID",
)
TABLES = ("Tag", "TagRef", "EngineeringUnit", "AnalogTag", "DiscreteTag", "StringTag", "Points")

POINT_COLUMNS = ("TagName", "DateTime", "Value", "VValue", "Quality", "QualityDetail", "OpcQuality")

Point = tuple[str, datetime, float | None, str | None, int | None, int | None, int | None]
"""A stored point: (TagName, DateTime in UTC, Value, VValue, Quality, QualityDetail, OpcQuality)."""


@dataclass(frozen=True)
class TagDef:
    """A tag to create; `min_eu`/`max_eu`/`unit` apply to analog tags (TagType 1)."""

    name: str
    tag_type: int
    description: str | None = None
    min_eu: float | None = None
    max_eu: float | None = None
    unit: str | None = None
    acquisition_type: int = IO_SERVER


class OldStoreError(RuntimeError):
    """The store predates AVEVA's table layout and could not be migrated."""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating file, parent directories and tables if needed) the store at `path`.

    A store of the emulator's earlier layout (`TagRef(TagName, TagType, Description)`) is
    migrated to AVEVA's tables in place; its points are kept. The connection uses WAL
    journaling and a busy timeout so that a simulator can append while the pipeline reads.
    Like a pymssql connection, it may be used from another thread than the one that opened
    it (one at a time): an embedded insert pulls a read's batches from chDB's own thread.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL journal mode")
        # NORMAL is durable in WAL mode except for the last transactions on power loss, which a
        # simulator can afford.
        conn.execute("PRAGMA synchronous = NORMAL")
        if not _has_schema(conn):
            with conn:
                old_tags = _old_layout_tags(conn, path)
                for statement in _DDL:
                    conn.execute(statement)
                if not _points_indexed(conn):
                    # Points was created elsewhere as a plain table: reads need the index.
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS Points_TagName_DateTime "
                        "ON Points(TagName, DateTime)"
                    )
                if old_tags:
                    _insert_tags(conn, old_tags)
    except BaseException:
        conn.close()
        raise
    return conn


def _has_schema(conn: sqlite3.Connection) -> bool:
    return set(TABLES) <= _table_names(conn) and "wwDomainTagKey" in _columns(conn, "TagRef") \
        and _points_indexed(conn)


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")]


def _old_layout_tags(conn: sqlite3.Connection, path: Path) -> list[TagDef]:
    """The tags of a store in the emulator's earlier layout, whose tag tables are dropped
    here (inside the caller's transaction); [] for a new or current store."""
    if "TagRef" not in _table_names(conn) or "wwDomainTagKey" in _columns(conn, "TagRef"):
        return []
    if _columns(conn, "TagRef")[:3] != ["TagName", "TagType", "Description"]:
        raise OldStoreError(
            f"{path} holds a TagRef table that is neither AVEVA's nor the emulator's earlier "
            "one; delete the file and recreate the plant (`ww simulate create`)"
        )
    rows = conn.execute(
        "SELECT t.rowid, t.TagName, t.TagType, t.Description, a.MinEU, a.MaxEU, a.Unit "
        "FROM TagRef t LEFT JOIN AnalogTag a ON a.TagName = t.TagName ORDER BY t.rowid"
    ).fetchall()
    conn.execute("DROP TABLE TagRef")
    conn.execute("DROP TABLE IF EXISTS AnalogTag")
    return [
        # The earlier layout marked system tags by name alone.
        TagDef(name, kind, description, low, high, unit,
               SYSTEM_DRIVER if name.startswith("Sys") else IO_SERVER)
        for _, name, kind, description, low, high, unit in rows
    ]


def _points_indexed(conn: sqlite3.Connection) -> bool:
    """Whether some index of Points (its primary key included) leads with (TagName, DateTime)."""
    for index in conn.execute("PRAGMA index_list(Points)").fetchall():
        columns = [row[2] for row in conn.execute(f"PRAGMA index_info({_quote(index[1])})")]
        if columns[:2] == ["TagName", "DateTime"]:
            return True
    return False


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def add_tags(conn: sqlite3.Connection, tags: Iterable[TagDef]) -> int:
    """Create or update `tags` in `Tag`, `TagRef` and their type's table; returns the count.

    A tag keeps its `wwTagKey` when it is updated; a new tag gets the next one.
    """
    tags = list(tags)
    with conn:
        _insert_tags(conn, tags)
    return len(tags)


def _insert_tags(conn: sqlite3.Connection, tags: list[TagDef]) -> None:
    for tag in tags:
        row = conn.execute("SELECT wwTagKey FROM Tag WHERE TagName = ?", (tag.name,)).fetchone()
        key = row[0] if row else conn.execute(
            "SELECT coalesce(max(wwTagKey), 0) + 1 FROM Tag"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO Tag (TagName, IOServerKey, StorageNodeKey, wwTagKey, TopicKey, "
            "Description, AcquisitionType, StorageType, StorageRate, ItemName) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (TagName) DO UPDATE SET "
            "IOServerKey = excluded.IOServerKey, TopicKey = excluded.TopicKey, "
            "Description = excluded.Description, AcquisitionType = excluded.AcquisitionType",
            (
                tag.name, None if tag.acquisition_type == SYSTEM_DRIVER else 1, STORAGE_NODE_KEY,
                key, None if tag.acquisition_type == SYSTEM_DRIVER else 1, tag.description,
                tag.acquisition_type, DELTA_STORAGE, tag.name,
            ),
        )
        conn.execute(
            "INSERT INTO TagRef (wwTagKey, ServerKey, TagName, TagType) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (TagName) DO UPDATE SET TagType = excluded.TagType",
            (key, SERVER_KEY, tag.name, tag.tag_type),
        )
        for table in ("AnalogTag", "DiscreteTag", "StringTag"):
            conn.execute(f"DELETE FROM {table} WHERE TagName = ?", (tag.name,))
        if tag.tag_type == ANALOG:
            conn.execute(
                "INSERT INTO AnalogTag (TagName, EUKey, MinEU, MaxEU, MinRaw, MaxRaw, Scaling, "
                "RawType, ValueDeadband, IntegerSize, SignedInteger) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, 3, 0, 0, 0)",
                (tag.name, _eu_key(conn, tag.unit), tag.min_eu, tag.max_eu, tag.min_eu, tag.max_eu),
            )
        elif tag.tag_type == DISCRETE:
            conn.execute("INSERT INTO DiscreteTag (TagName, MessageKey) VALUES (?, 1)", (tag.name,))
        elif tag.tag_type == STRING:
            conn.execute(
                "INSERT INTO StringTag (TagName, MaxLength, ApplyFilter, DoubleByte) "
                "VALUES (?, 512, 0, 1)",
                (tag.name,),
            )


def _eu_key(conn: sqlite3.Connection, unit: str | None) -> int | None:
    if unit is None:
        return None
    conn.execute("INSERT OR IGNORE INTO EngineeringUnit (Unit) VALUES (?)", (unit,))
    return conn.execute("SELECT EUKey FROM EngineeringUnit WHERE Unit = ?", (unit,)).fetchone()[0]


def remove_tags(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    """Delete tags from the catalog tables (their stored points stay), as deleting a tag in
    the historian's configuration does."""
    with conn:
        for name in names:
            for table in ("Tag", "TagRef", "AnalogTag", "DiscreteTag", "StringTag"):
                conn.execute(f"DELETE FROM {table} WHERE TagName = ?", (name,))


def tag_definitions(conn: sqlite3.Connection) -> list[TagDef]:
    """Every tag of the catalog, by name."""
    rows = conn.execute(
        "SELECT t.TagName, r.TagType, t.Description, a.MinEU, a.MaxEU, u.Unit, t.AcquisitionType "
        "FROM Tag t JOIN TagRef r ON r.TagName = t.TagName "
        "LEFT JOIN AnalogTag a ON a.TagName = t.TagName "
        "LEFT JOIN EngineeringUnit u ON u.EUKey = a.EUKey ORDER BY t.TagName"
    ).fetchall()
    return [TagDef(*row) for row in rows]


def add_points(
    conn: sqlite3.Connection,
    rows: Iterable[Point],
    batch_rows: int = INSERT_BATCH_ROWS,
) -> int:
    """Store `rows` (DateTime aware, or naive meaning UTC); returns how many were written.

    Rows are written in batches of `batch_rows`, one transaction each. A row at an existing
    (TagName, DateTime) replaces the stored point.
    """
    return add_point_texts(
        conn,
        (
            (tag, format_utc(moment), value, vvalue, quality, detail, opc)
            for tag, moment, value, vvalue, quality, detail, opc in rows
        ),
        batch_rows,
    )


def add_point_texts(
    conn: sqlite3.Connection,
    rows: Iterable[tuple[str, str, float | None, str | None, int | None, int | None, int | None]],
    batch_rows: int = INSERT_BATCH_ROWS,
) -> int:
    """Like `add_points`, for rows whose DateTime is already `format_utc` text."""
    sql = "INSERT OR REPLACE INTO Points VALUES (?, ?, ?, ?, ?, ?, ?)"
    written = 0
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_rows:
            with conn:
                conn.executemany(sql, batch)
            written += len(batch)
            batch = []
    if batch:
        with conn:
            conn.executemany(sql, batch)
        written += len(batch)
    return written


def format_utc(moment: datetime) -> str:
    """`moment` (aware, or naive meaning UTC) as stored: UTC `YYYY-MM-DD HH:MM:SS.fff`.

    Sub-millisecond digits are truncated: the historian stores milliseconds.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="milliseconds")


def parse_utc(text: str) -> datetime:
    """A stored `DateTime` text as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


