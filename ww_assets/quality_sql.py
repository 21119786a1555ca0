"""What the data-quality gates ask ClickHouse, and the 1-minute rollup table. No Dagster import.

Every function takes a short warehouse session (`conn`) or the warehouse itself and uses bound
`{name:Type}` parameters; identifiers come from constants only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from ww_assets.history_store import HISTORY_TABLE, TAGS_TABLE
from ww_assets.warehouse import Warehouse, WarehouseConnection

ROLLUP_TABLE = "WonderwareHistoryAggregated"
GOOD_QUALITY = 0
"""`History.Quality` of a good point (1 bad, 16 doubtful; DESIGN §2)."""

_SLICE = (
    "TagName IN {tags:Array(String)} AND DateTime >= {start:DateTime64(3, 'UTC')} "
    "AND DateTime < {end:DateTime64(3, 'UTC')}"
)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _slice_params(tags: Iterable[str], start: datetime, end: datetime) -> dict[str, object]:
    return {"tags": list(tags), "start": _naive_utc(start), "end": _naive_utc(end)}


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[day, day + 1) in UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


# ---------------------------------------------------------------- per-partition checks


def counts_by_tag(
    conn: WarehouseConnection, database: str, tags: list[str], start: datetime, end: datetime
) -> dict[str, int]:
    """Rows per tag in the slice as a plain SELECT sees them; 0 for tags without rows."""
    table = conn.query(
        f"SELECT TagName, count() AS n FROM {database}.{HISTORY_TABLE} WHERE {_SLICE} "
        "GROUP BY TagName",
        _slice_params(tags, start, end),
    )
    counts = dict.fromkeys(tags, 0)
    counts.update({row["TagName"]: int(row["n"]) for row in table.to_pylist()})
    return counts


def count_mismatches(
    expected: Mapping[str, int], actual: Mapping[str, int]
) -> list[dict[str, object]]:
    """Tags whose counts differ, largest difference first."""
    rows = [
        {"tag": tag, "historian": expected.get(tag, 0), "clickhouse": actual.get(tag, 0)}
        for tag in sorted(set(expected) | set(actual))
        if expected.get(tag, 0) != actual.get(tag, 0)
    ]
    return sorted(rows, key=lambda r: -abs(int(r["historian"]) - int(r["clickhouse"])))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Duplicates:
    keys: int
    """(TagName, DateTime) keys seen more than once."""
    extra_rows: int
    samples: list[dict[str, object]]


def duplicate_keys(
    conn: WarehouseConnection,
    database: str,
    tags: list[str],
    start: datetime,
    end: datetime,
    samples: int = 10,
) -> Duplicates:
    """Keys that a plain SELECT (no FINAL) returns more than once in the slice."""
    table = conn.query(
        "SELECT TagName, toString(DateTime) AS DateTime, n FROM ("
        f"SELECT TagName, DateTime, count() AS n FROM {database}.{HISTORY_TABLE} "
        f"WHERE {_SLICE} GROUP BY TagName, DateTime HAVING n > 1) "
        "ORDER BY n DESC, TagName, DateTime",
        _slice_params(tags, start, end),
    )
    rows = table.to_pylist()
    return Duplicates(
        keys=len(rows),
        extra_rows=sum(int(r["n"]) - 1 for r in rows),
        samples=[{"tag": r["TagName"], "datetime": r["DateTime"], "copies": int(r["n"])}
                 for r in rows[:samples]],
    )


@dataclass(frozen=True)
class WindowReport:
    load_id: int | None
    """The slice's oldest load: the partition's own load, since it deleted every older one."""
    load_rows: int
    outside_window: int
    in_future: int
    samples: list[dict[str, object]]


def window_report(
    conn: WarehouseConnection,
    database: str,
    tags: list[str],
    start: datetime,
    end: datetime,
    now: datetime,
    samples: int = 10,
) -> WindowReport:
    """Rows that the partition's load wrote outside [start, end), and rows of the slice dated
    after `now` or after the moment they were loaded (a load id is the load's start time in ns).
    """
    params = {**_slice_params(tags, start, end), "now": _naive_utc(now)}
    first = conn.query(
        f"SELECT min(LoadId) AS load_id, count() AS n FROM {database}.{HISTORY_TABLE} "
        f"WHERE {_SLICE}",
        params,
    ).to_pylist()[0]
    if not int(first["n"]):
        return WindowReport(None, 0, 0, 0, [])
    load_id = int(first["load_id"])
    outside = conn.query(
        "SELECT TagName, toString(DateTime) AS Stamp, "
        "DateTime < {start:DateTime64(3, 'UTC')} OR DateTime >= {end:DateTime64(3, 'UTC')} "
        "AS outside, "
        "DateTime > {now:DateTime64(3, 'UTC')} "
        "OR toUnixTimestamp64Milli(DateTime) > intDiv(LoadId, 1000000) AS future "
        f"FROM {database}.{HISTORY_TABLE} WHERE TagName IN {{tags:Array(String)}} AND ("
        "(LoadId = {load_id:UInt64} AND (DateTime < {start:DateTime64(3, 'UTC')} "
        "OR DateTime >= {end:DateTime64(3, 'UTC')})) "
        f"OR ({_SLICE} AND (DateTime > {{now:DateTime64(3, 'UTC')}} "
        "OR toUnixTimestamp64Milli(DateTime) > intDiv(LoadId, 1000000)))) "
        "ORDER BY TagName, DateTime",
        {**params, "load_id": load_id},
    ).to_pylist()
    return WindowReport(
        load_id=load_id,
        load_rows=int(first["n"]),
        outside_window=sum(1 for r in outside if r["outside"]),
        in_future=sum(1 for r in outside if r["future"]),
        samples=[{"tag": r["TagName"], "datetime": r["Stamp"],
                  "problem": "outside window" if r["outside"] else "in the future"}
                 for r in outside[:samples]],
    )


@dataclass(frozen=True)
class QualityReport:
    points: int
    good: int
    worst: list[dict[str, object]]

    @property
    def ratio(self) -> float | None:
        return self.good / self.points if self.points else None


def quality_report(
    conn: WarehouseConnection,
    database: str,
    tags: list[str],
    start: datetime,
    end: datetime,
    worst: int = 10,
) -> QualityReport:
    """Good-quality points (`Quality = 0`) in the slice, and the tags with the lowest share."""
    table = conn.query(
        "SELECT TagName, count() AS points, countIf(Quality = {good:UInt8}) AS good "
        f"FROM {database}.{HISTORY_TABLE} WHERE {_SLICE} GROUP BY TagName "
        "ORDER BY good / points, TagName",
        {**_slice_params(tags, start, end), "good": GOOD_QUALITY},
    )
    rows = table.to_pylist()
    return QualityReport(
        points=sum(int(r["points"]) for r in rows),
        good=sum(int(r["good"]) for r in rows),
        worst=[{"tag": r["TagName"], "points": int(r["points"]),
                "good_ratio": round(int(r["good"]) / int(r["points"]), 4)}
               for r in rows[:worst] if r["good"] < r["points"]],
    )


@dataclass(frozen=True)
class RangeReport:
    checked: int
    outside: int
    offenders: list[dict[str, object]]


def eu_range_report(
    conn: WarehouseConnection,
    database: str,
    tags: list[str],
    start: datetime,
    end: datetime,
    offenders: int = 10,
) -> RangeReport:
    """Analog values against [MinEU, MaxEU] of the tag catalog (from `AnalogTag`)."""
    table = conn.query(
        "SELECT h.TagName AS TagName, count() AS checked, "
        "countIf(h.Value < c.MinEU OR h.Value > c.MaxEU) AS outside, "
        "min(h.Value) AS low, max(h.Value) AS high, any(c.MinEU) AS min_eu, "
        "any(c.MaxEU) AS max_eu "
        f"FROM {database}.{HISTORY_TABLE} AS h "
        f"INNER JOIN (SELECT TagName, MinEU, MaxEU FROM {database}.{TAGS_TABLE} FINAL "
        "WHERE TagType = 1 AND MinEU IS NOT NULL AND MaxEU IS NOT NULL) AS c "
        "ON h.TagName = c.TagName "
        "WHERE h.TagName IN {tags:Array(String)} AND h.DateTime >= {start:DateTime64(3, 'UTC')} "
        "AND h.DateTime < {end:DateTime64(3, 'UTC')} AND h.Value IS NOT NULL "
        "GROUP BY h.TagName ORDER BY outside DESC, h.TagName",
        _slice_params(tags, start, end),
    )
    rows = table.to_pylist()
    return RangeReport(
        checked=sum(int(r["checked"]) for r in rows),
        outside=sum(int(r["outside"]) for r in rows),
        offenders=[{"tag": r["TagName"], "outside": int(r["outside"]), "min": r["low"],
                    "max": r["high"], "min_eu": r["min_eu"], "max_eu": r["max_eu"]}
                   for r in rows[:offenders] if r["outside"]],
    )


def newest_point(conn: WarehouseConnection, database: str, now: datetime) -> datetime | None:
    """The newest point not dated after `now` (a future-dated row must not hide a lag)."""
    table = conn.query(
        "SELECT max(DateTime) AS newest, count() AS n "
        f"FROM {database}.{HISTORY_TABLE} WHERE DateTime <= {{now:DateTime64(3, 'UTC')}}",
        {"now": _naive_utc(now)},
    ).to_pylist()[0]
    if not int(table["n"]):
        return None
    newest: datetime = table["newest"]
    return newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- reconciliation


def counts_by_day_and_tag(
    conn: WarehouseConnection, database: str, tags: list[str], first: date, last: date
) -> dict[tuple[date, str], int]:
    """Rows per (UTC day, tag) for the days first..last."""
    start, _ = day_bounds(first)
    _, end = day_bounds(last)
    table = conn.query(
        "SELECT toDate(DateTime, 'UTC') AS day, TagName, count() AS n "
        f"FROM {database}.{HISTORY_TABLE} WHERE {_SLICE} GROUP BY day, TagName",
        _slice_params(tags, start, end),
    )
    return {(r["day"], r["TagName"]): int(r["n"]) for r in table.to_pylist()}


# ---------------------------------------------------------------- 1-minute rollup


def ensure_rollup_schema(conn: WarehouseConnection, database: str) -> None:
    """`WonderwareHistoryAggregated`: the replaced system's rollup columns, plus `LoadId` so a
    day is replaced without a hole (as `replace_slice` does for raw points)."""
    conn.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    conn.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.{ROLLUP_TABLE} (
    TagName String,
    minute_timestamp DateTime('UTC'),
    first_value Nullable(Float64),
    avg_value Nullable(Float64),
    min_value Nullable(Float64),
    max_value Nullable(Float64),
    count UInt64,
    avg_quality Nullable(Float64),
    min_quality Nullable(Int32),
    LoadId UInt64
) ENGINE = ReplacingMergeTree(LoadId)
PARTITION BY toYYYYMM(minute_timestamp)
ORDER BY (TagName, minute_timestamp)
SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1"""
    )


@dataclass
class RollupStats:
    rows: int = 0
    points: int = 0
    tags: int = 0
    seconds: float = 0.0


def replace_rollup_day(warehouse: Warehouse, day: date) -> RollupStats:
    """Make the rollup of `day` exactly the aggregate of its raw points: insert the new
    minutes under a fresh load id, then delete the day's rows of older loads.

    Per tag and minute: `first_value` is the first non-NULL value, avg/min/max are over
    non-NULL values, `count` counts every stored point (gap markers and strings too), and the
    quality columns aggregate `Quality`.
    """
    started = time.monotonic()
    load_id = time.time_ns()
    start, end = day_bounds(day)
    table = f"{warehouse.database}.{ROLLUP_TABLE}"
    params = {"start": _naive_utc(start), "end": _naive_utc(end), "load_id": load_id}
    with warehouse.connect() as conn:
        ensure_rollup_schema(conn, warehouse.database)
        conn.command(
            f"INSERT INTO {table} SELECT TagName, "
            "toStartOfMinute(DateTime) AS minute_timestamp, "
            "argMinIf(Value, DateTime, Value IS NOT NULL) AS first_value, "
            "avg(Value) AS avg_value, min(Value) AS min_value, max(Value) AS max_value, "
            "count() AS count, avg(Quality) AS avg_quality, min(Quality) AS min_quality, "
            "{load_id:UInt64} AS LoadId "
            f"FROM {warehouse.database}.{HISTORY_TABLE} "
            "WHERE DateTime >= {start:DateTime64(3, 'UTC')} AND DateTime < {end:DateTime64(3, 'UTC')} "
            "GROUP BY TagName, minute_timestamp",
            params,
        )
        day_filter = (
            "minute_timestamp >= {start:DateTime('UTC')} AND minute_timestamp < {end:DateTime('UTC')}"
        )
        conn.command(
            f"DELETE FROM {table} WHERE {day_filter} AND LoadId < {{load_id:UInt64}} "
            "SETTINGS lightweight_delete_mode = 'lightweight_update'",
            {"start": start.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S"),
             "end": end.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S"), "load_id": load_id},
        )
        summary = conn.query(
            "SELECT TagName, count() AS minutes, sum(count) AS points "
            f"FROM {table} WHERE {day_filter} GROUP BY TagName",
            {"start": start.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S"),
             "end": end.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")},
        ).to_pylist()
    return RollupStats(
        rows=sum(int(r["minutes"]) for r in summary),
        points=sum(int(r["points"]) for r in summary),
        tags=len(summary),
        seconds=time.monotonic() - started,
    )
