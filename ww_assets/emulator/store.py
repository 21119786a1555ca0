"""The emulator's SQLite storage: tag catalog and stored points (DESIGN §4).

Tables (the contract other code and users rely on):

- `TagRef(TagName TEXT PRIMARY KEY, TagType INTEGER, Description TEXT)`
- `AnalogTag(TagName TEXT PRIMARY KEY, MinEU REAL, MaxEU REAL, Unit TEXT)`
- `Points(TagName TEXT, DateTime TEXT, Value REAL, VValue TEXT, Quality INTEGER,
  QualityDetail INTEGER, OpcQuality INTEGER)`, `DateTime` in UTC as `YYYY-MM-DD HH:MM:SS.fff`.

`Points` is keyed by (TagName, DateTime) and stored clustered on that key (`WITHOUT ROWID`):
one tag's points in a window are one contiguous range of the B-tree, which is what every read
asks for. A second point at an existing (TagName, DateTime) replaces the first, as an update
does in the historian (`wwVersion = 'Latest'`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ww_assets.historian import TagInfo

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for a lock: a live simulator writes while the pipeline reads."""

INSERT_BATCH_ROWS = 50_000

_DDL = (
    "CREATE TABLE IF NOT EXISTS TagRef ("
    "TagName TEXT PRIMARY KEY, TagType INTEGER NOT NULL, Description TEXT)",
    "CREATE TABLE IF NOT EXISTS AnalogTag ("
    "TagName TEXT PRIMARY KEY, MinEU REAL, MaxEU REAL, Unit TEXT)",
    "CREATE TABLE IF NOT EXISTS Points ("
    "TagName TEXT NOT NULL, DateTime TEXT NOT NULL, Value REAL, VValue TEXT, "
    "Quality INTEGER, QualityDetail INTEGER, OpcQuality INTEGER, "
    "PRIMARY KEY (TagName, DateTime)) WITHOUT ROWID",
)

POINT_COLUMNS = ("TagName", "DateTime", "Value", "VValue", "Quality", "QualityDetail", "OpcQuality")

Point = tuple[str, datetime, float | None, str | None, int | None, int | None, int | None]
"""A stored point: (TagName, DateTime in UTC, Value, VValue, Quality, QualityDetail, OpcQuality)."""


TagDef = TagInfo
"""A tag of the catalog; `min_eu`/`max_eu`/`unit` apply to analog tags (TagType 1)."""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating file, parent directories and tables if needed) the store at `path`.

    The connection uses WAL journaling and a busy timeout so that a simulator can append
    while the pipeline reads. Like a pymssql connection, it may be used from another thread
    than the one that opened it (one at a time): an embedded insert pulls a read's batches
    from chDB's own thread.
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
                for statement in _DDL:
                    conn.execute(statement)
                if not _points_indexed(conn):
                    # Points was created elsewhere as a plain table: reads need the index.
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS Points_TagName_DateTime "
                        "ON Points(TagName, DateTime)"
                    )
    except BaseException:
        conn.close()
        raise
    return conn


def _has_schema(conn: sqlite3.Connection) -> bool:
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"TagRef", "AnalogTag", "Points"} <= names and _points_indexed(conn)


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
    """Insert or replace `tags` in `TagRef` (and `AnalogTag` for analog tags); returns the count.

    Replacing keeps a tag's `TagRef` rowid (its `wwTagKey`) stable.
    """
    tags = list(tags)
    with conn:
        conn.executemany(
            "INSERT INTO TagRef (TagName, TagType, Description) VALUES (?, ?, ?) "
            "ON CONFLICT (TagName) DO UPDATE SET TagType = excluded.TagType, "
            "Description = excluded.Description",
            [(t.name, t.tag_type, t.description) for t in tags],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO AnalogTag (TagName, MinEU, MaxEU, Unit) VALUES (?, ?, ?, ?)",
            [(t.name, t.min_eu, t.max_eu, t.unit) for t in tags if t.tag_type == 1],
        )
    return len(tags)


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


