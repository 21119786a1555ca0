"""A small hand-made plant full of the historian's traps (midnight, DST, odd names, NULLs), and readers to compare both sides."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from ww_assets.emulator import store
from ww_assets.history_query import day_bounds, naive_utc
from ww_assets.history_store import HISTORY_STORE, HISTORY_TABLE, HISTORY_VIEW_COLUMNS
from ww_assets.warehouse import Warehouse

UTC = timezone.utc

TRAP_TAGS = [
    store.TagDef("Reactor01.Temperature", 1, "reactor temperature", 0.0, 400.0, "degC"),
    store.TagDef("Tank.Level", 1, "tank level with bad-quality gaps", 0.0, 100.0, "%"),
    store.TagDef("Operator's;--Note", 3, "string tag with a quote, semicolon and --"),
    store.TagDef("Kühlwasser Pumpe.Status", 2, "discrete, non-ASCII and a space"),
    store.TagDef('Zähler "7".Count', 1, "double quotes", 0.0, 1e6, "1"),
    store.TagDef("Line 2.Speed rpm", 1, "spaces and dots", 0.0, 3000.0, "rpm"),
    store.TagDef("System2.Flow", 1, "a plant tag whose name starts with System", 0.0, 80.0, "m3/h"),
    store.TagDef("SysTimeSec", 1, "system tag: never copied", 0.0, 59.0, "s", store.SYSTEM_DRIVER),
]
COPIED_TAGS = sorted(t.name for t in TRAP_TAGS if t.acquisition_type != store.SYSTEM_DRIVER)

# 2025-11-02 is the autumn DST change in America/Chicago (the emulator's default zone):
# 01:00-02:00 local happens twice (06:00-08:00 UTC).
DAYS = [date(2025, 10, 31), date(2025, 11, 1), date(2025, 11, 2), date(2025, 11, 3)]


def trap_points() -> list[store.Point]:
    """Points at and around every midnight (±1 ms), through the DST hour, with repeats,
    bad-quality NULLs, strings and a discrete tag."""
    points: list[store.Point] = []
    start = datetime(2025, 10, 31, tzinfo=UTC)
    for day in range(5):
        midnight = start + timedelta(days=day)
        for offset_ms in (-1, 0, 1):
            moment = midnight + timedelta(milliseconds=offset_ms)
            points.append(("Reactor01.Temperature", moment, 100.0 + day + offset_ms / 10,
                           None, 0, 192, 192))
    for minute in range(0, 4 * 24 * 60, 10):  # every 10 min for 4 days, repeating values
        moment = start + timedelta(minutes=minute, milliseconds=minute % 997)
        level = float((minute // 30) % 5)  # 3 equal values in a row: Delta would drop some
        if minute % 170 == 0:
            points.append(("Tank.Level", moment, None, None, 1, 24, 0))  # bad quality: NULL
        else:
            points.append(("Tank.Level", moment, level, None, 0 if minute % 7 else 16,
                           192 if minute % 7 else 64, 192 if minute % 7 else 64))
        if minute % 60 == 0:
            state = 1.0 if (minute // 120) % 2 else 0.0
            points.append(("Kühlwasser Pumpe.Status", moment, state, None, 0, 192, 192))
        if minute % 240 == 0:
            points.append(("Operator's;--Note", moment, None,
                           ["start", "shift change", "it's fine; -- ok", "stop"][minute // 240 % 4],
                           0, 192, 192))
    # DST hour, UTC 06:00-08:00 on 2025-11-02: a point every 5 minutes
    for minute in range(0, 120, 5):
        moment = datetime(2025, 11, 2, 6, 0, tzinfo=UTC) + timedelta(minutes=minute, seconds=7)
        points.append(('Zähler "7".Count', moment, float(minute), None, 0, 192, 192))
    points.append(("SysTimeSec", datetime(2025, 11, 1, 12, tzinfo=UTC), 1.0, None, 0, 192, 192))
    for day in range(4):  # a plant tag named like a system tag: copied like any other
        moment = start + timedelta(days=day, hours=3, milliseconds=day)
        points.append(("System2.Flow", moment, 10.0 + day, None, 0, 192, 192))
    # "Line 2.Speed rpm" has one point, on 2025-11-01 only: other days are empty for it
    points.append(("Line 2.Speed rpm", datetime(2025, 11, 1, 12, 30, 0, 250000, tzinfo=UTC),
                   1500.5, None, 0, 192, 192))
    # analog and discrete tags carry their value as vValue text, as the historian does
    return [
        (tag, moment, value, vvalue if vvalue is not None or value is None else _vtext(value),
         q, qd, opc)
        for tag, moment, value, vvalue, q, qd, opc in points
    ]


def _vtext(value: float) -> str:
    return repr(value)


def build_trap_plant(path: Path) -> None:
    conn = store.connect(path)
    try:
        store.add_tags(conn, TRAP_TAGS)
        store.add_points(conn, trap_points())
    finally:
        conn.close()


def stored_points(path: Path, tags: list[str], first: date, last: date) -> list[tuple]:
    """The emulator's stored points of `tags` on the days first..last, straight from SQLite."""
    return stored_points_between(path, tags, day_bounds(first)[0], day_bounds(last)[1])


def warehouse_points(warehouse: Warehouse, tags: list[str], first: date, last: date) -> list[tuple]:
    """The same columns from ClickHouse for the days first..last."""
    return warehouse_points_between(
        warehouse, tags, day_bounds(first)[0], day_bounds(last)[1]
    )


def stored_points_between(path: Path, tags: list[str], since: datetime, until: datetime) -> list[tuple]:
    """Stored points of `tags` in [since, until), straight from SQLite (not the emulator)."""
    conn = sqlite3.connect(path)
    try:
        marks = ",".join("?" * len(tags))
        rows = conn.execute(
            "SELECT TagName, DateTime, Value, VValue, Quality, QualityDetail, OpcQuality "
            f"FROM Points WHERE TagName IN ({marks}) AND DateTime >= ? AND DateTime < ? "
            "ORDER BY TagName, DateTime",
            [*tags, store.format_utc(since), store.format_utc(until)],
        ).fetchall()
    finally:
        conn.close()
    return [tuple(r) for r in rows]


def warehouse_points_between(
    warehouse: Warehouse, tags: list[str], since: datetime, until: datetime
) -> list[tuple]:
    """The same columns from ClickHouse, as a plain SELECT (no FINAL) sees them."""
    with warehouse.connect() as conn:
        table = conn.query(
            "SELECT TagName, toString(DateTime) AS Stamp, "
            "Value, VValue, Quality, QualityDetail, OpcQuality "
            f"FROM {warehouse.database}.{HISTORY_TABLE} "
            "WHERE TagName IN {tags:Array(String)} AND DateTime >= {a:DateTime64(3, 'UTC')} "
            "AND DateTime < {b:DateTime64(3, 'UTC')} ORDER BY TagName, Stamp",
            {"tags": tags, "a": naive_utc(since), "b": naive_utc(until)},
        )
    return [
        (r["TagName"], r["Stamp"], r["Value"], r["VValue"], r["Quality"],
         r["QualityDetail"], r["OpcQuality"])
        for r in table.to_pylist()
    ]


def on_a_second_shard(conn, database: str, rows: pa.Table) -> None:  # type: ignore[no-untyped-def]
    """Readers' view over the store and over a second store holding `rows`: what readers of a
    cluster see when some of a tag's rows sit on another shard (a sharding key changed under
    them), the one way a reader can see a point twice."""
    conn.command(f"CREATE TABLE {database}.SecondShard AS {database}.{HISTORY_STORE}")
    conn.insert(f"{database}.SecondShard", rows)
    conn.command(
        f"CREATE OR REPLACE VIEW {database}.{HISTORY_TABLE} AS SELECT {HISTORY_VIEW_COLUMNS} "
        f"FROM {database}.{HISTORY_STORE} FINAL UNION ALL SELECT {HISTORY_VIEW_COLUMNS} "
        f"FROM {database}.SecondShard FINAL"
    )


def off_the_second_shard(conn, database: str) -> None:  # type: ignore[no-untyped-def]
    """Undo `on_a_second_shard`: readers' view as `create_schema` makes it."""
    from ww_assets.history_store import create_schema

    conn.command(f"DROP VIEW {database}.{HISTORY_TABLE}")
    conn.command(f"DROP TABLE {database}.SecondShard")
    create_schema(conn, database)
