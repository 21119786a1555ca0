"""What the history checks ask ClickHouse about a chunk's days. No Dagster import.

A range run checks up to a month of one chunk's days at once: `summarize` reads the rows of
all those days in one scan, and each check answers per day from that summary, asking
ClickHouse again only for the details of a day that fails. Every function takes a short
warehouse session (`conn`) and uses bound `{name:Type}` parameters; identifiers come from
constants only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone

from ww_assets.history_query import day_bounds, naive_utc
from ww_assets.history_store import (
    DELETED_COLUMN,
    HISTORY_STORE,
    HISTORY_TABLE,
    SLICE,
    TAGS_TABLE,
    slice_params,
)
from ww_assets.warehouse import WarehouseConnection

GOOD_QUALITY = 0
"""`History.Quality` of a good point (1 bad, 16 doubtful)."""


UTC_DAY = "toDate(DateTime, 'UTC')"
_FUTURE = (
    "(DateTime > {now:DateTime64(3, 'UTC')} "
    "OR toUnixTimestamp64Milli(DateTime) > intDiv(LoadId, 1000000))"
)
"""A row dated after `now` or after the moment it was loaded (a load id is its start in ns)."""


def days_params(tags: Iterable[str], days: Iterable[date]) -> dict[str, object]:
    """The slice parameters spanning `days` (first to last; callers keep only `days`)."""
    ordered = sorted(days)
    return slice_params(tags, day_bounds(ordered[0])[0], day_bounds(ordered[-1])[1])


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
class TagDay:
    """One tag's rows on one UTC day, as a plain SELECT (no FINAL) sees them."""

    tag: str
    rows: int
    load_id: int
    """The oldest load among the rows readers see: the partition's own, since it replaced every
    older one."""
    repeated: int
    """Rows whose (TagName, DateTime) equals the previous row's: extra copies of a key."""
    good: int
    values: int
    """Rows with a Value (not NULL)."""
    low: float | None
    high: float | None
    future: int
    outside_eu: int
    """Values outside the tag's [MinEU, MaxEU] (0 for a tag without a range)."""


@dataclass(frozen=True)
class Summary:
    """What the checks of one chunk's days need, read in one scan (`summarize`)."""

    tags: list[str]
    now: datetime
    days: dict[date, list[TagDay]]
    """Every day asked for; a day without rows has an empty list."""
    eu_ranges: dict[str, tuple[float, float]]
    """[MinEU, MaxEU] of the analog tags that have both (from `AnalogTag`)."""


def _eu_ranges(
    conn: WarehouseConnection, database: str, tags: list[str]
) -> dict[str, tuple[float, float]]:
    return {
        r["TagName"]: (r["MinEU"], r["MaxEU"])
        for r in conn.query(
            f"SELECT TagName, MinEU, MaxEU FROM {database}.{TAGS_TABLE} FINAL "
            "WHERE TagName IN {tags:Array(String)} AND TagType = 1 "
            "AND MinEU IS NOT NULL AND MaxEU IS NOT NULL",
            {"tags": tags},
        ).to_pylist()
    }


def summarize(
    conn: WarehouseConnection, database: str, tags: list[str], days: list[date], now: datetime
) -> Summary:
    ranges = _eu_ranges(conn, database, tags)
    # Comparing each row's key with the previous row's streams over the sorted slice, where
    # grouping by key would build a hash table of every key.
    rows = conn.query(
        "SELECT day, TagName, count() AS rows, min(LoadId) AS load_id, "
        "countIf(previous = DateTime) AS repeated, countIf(Quality = {good:UInt8}) AS good, "
        "count(Value) AS values, min(Value) AS low, max(Value) AS high, "
        "sum(future) AS future, countIf("
        "Value < transform(TagName, {eu_tags:Array(String)}, {eu_lows:Array(Float64)}, -inf) OR "
        "Value > transform(TagName, {eu_tags:Array(String)}, {eu_highs:Array(Float64)}, inf)"
        ") AS outside_eu FROM ("
        f"SELECT {UTC_DAY} AS day, TagName, DateTime, LoadId, Quality, Value, {_FUTURE} AS future, "
        "lagInFrame(toNullable(DateTime)) OVER (PARTITION BY TagName ORDER BY DateTime "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous "
        f"FROM {database}.{HISTORY_TABLE} WHERE {SLICE}) GROUP BY day, TagName "
        # reading in the table's order (TagName, DateTime) spares the window a sort: half the time
        "ORDER BY day, TagName SETTINGS optimize_read_in_window_order = 1",
        {**days_params(tags, days), "now": naive_utc(now), "good": GOOD_QUALITY,
         "eu_tags": list(ranges), "eu_lows": [low for low, _ in ranges.values()],
         "eu_highs": [high for _, high in ranges.values()]},
    ).to_pylist()  # fmt: skip
    by_day: dict[date, list[TagDay]] = {day: [] for day in days}
    for r in rows:
        if r["day"] in by_day:
            by_day[r["day"]].append(
                TagDay(r["TagName"], int(r["rows"]), int(r["load_id"]), int(r["repeated"]),
                       int(r["good"]), int(r["values"]), r["low"], r["high"], int(r["future"]),
                       int(r["outside_eu"]))
            )  # fmt: skip
    return Summary(list(tags), now, by_day, ranges)


def _offenders(
    conn: WarehouseConnection,
    database: str,
    where: str,
    params: Mapping[str, object],
    group: str,
    samples: int,
    table: str = HISTORY_TABLE,
) -> dict[object, list[dict[str, object]]]:
    """The first `samples` rows of `table` matching `where` (by tag and time), per value of
    `group`."""
    rows = conn.query(
        f"SELECT grp, TagName, Stamp FROM (SELECT {group} AS grp, TagName, "
        "toString(DateTime) AS Stamp, "
        "row_number() OVER (PARTITION BY grp ORDER BY TagName, DateTime) AS nth "
        f"FROM {database}.{table} WHERE {where}) "
        f"WHERE nth <= {int(samples)} ORDER BY grp, TagName, Stamp",
        params,
    ).to_pylist()
    found: dict[object, list[dict[str, object]]] = {}
    for row in rows:
        found.setdefault(row["grp"], []).append({"tag": row["TagName"], "datetime": row["Stamp"]})
    return found


@dataclass(frozen=True)
class Duplicates:
    keys: int
    """(TagName, DateTime) keys seen more than once."""
    extra_rows: int
    samples: list[dict[str, object]]


def duplicate_keys(
    conn: WarehouseConnection, database: str, summary: Summary, samples: int = 10
) -> dict[date, Duplicates]:
    """Per day: keys that a plain SELECT (no FINAL) returns more than once."""
    found = {}
    for day, tag_days in summary.days.items():
        if not any(t.repeated for t in tag_days):
            found[day] = Duplicates(keys=0, extra_rows=0, samples=[])
            continue
        rows = conn.query(
            "SELECT TagName, toString(DateTime) AS DateTime, n FROM ("
            f"SELECT TagName, DateTime, count() AS n FROM {database}.{HISTORY_TABLE} "
            f"WHERE {SLICE} GROUP BY TagName, DateTime HAVING n > 1) "
            "ORDER BY n DESC, TagName, DateTime",
            slice_params(summary.tags, *day_bounds(day)),
        ).to_pylist()
        found[day] = Duplicates(
            keys=len(rows),
            extra_rows=sum(int(r["n"]) - 1 for r in rows),
            samples=[{"tag": r["TagName"], "datetime": r["DateTime"], "copies": int(r["n"])}
                     for r in rows[:samples]],
        )
    return found


@dataclass(frozen=True)
class WindowReport:
    load_id: int | None
    """The slice's oldest visible load: the partition's own, since it replaced every older one."""
    outside_window: int
    in_future: int
    samples: list[dict[str, object]]


def window_report(
    conn: WarehouseConnection, database: str, summary: Summary, samples: int = 10
) -> dict[date, WindowReport]:
    """Per day: rows that the day's load wrote outside the day, and rows of the day dated
    in the future (after `summary.now`, or after the moment they were loaded)."""
    loads = {
        day: min(t.load_id for t in tag_days) for day, tag_days in summary.days.items() if tag_days
    }
    outside: dict[object, int] = {}
    outside_rows: dict[object, list[dict[str, object]]] = {}
    params = days_params(summary.tags, summary.days)
    if loads:
        ids, load_days = zip(*((load_id, day) for day, load_id in loads.items()))
        # The rows the loads wrote anywhere in their tags' history (the store, not what
        # readers see: a newer load may have replaced them): the LoadId skip index reads only
        # the granules that hold them, however long the history is.
        where = (
            f"{DELETED_COLUMN} = 0 AND TagName IN {{tags:Array(String)}} AND "
            "LoadId IN {ids:Array(UInt64)} AND "
            f"{UTC_DAY} != transform(LoadId, {{ids:Array(UInt64)}}, {{days:Array(Date)}}, toDate(0))"
        )
        args = {**params, "ids": list(ids), "days": list(load_days)}
        outside = {
            r["LoadId"]: int(r["n"])
            for r in conn.query(
                f"SELECT LoadId, count() AS n FROM {database}.{HISTORY_STORE} WHERE {where} "
                "GROUP BY LoadId",
                args,
            ).to_pylist()
        }
        if outside:
            outside_rows = _offenders(conn, database, where, args, "LoadId", samples, HISTORY_STORE)
    future_rows: dict[object, list[dict[str, object]]] = {}
    if any(t.future for tag_days in summary.days.values() for t in tag_days):
        future_rows = _offenders(
            conn, database, f"{SLICE} AND {_FUTURE}",
            {**params, "now": naive_utc(summary.now)}, UTC_DAY, samples,
        )  # fmt: skip
    reports = {}
    for day, tag_days in summary.days.items():
        if day not in loads:
            reports[day] = WindowReport(None, 0, 0, [])
            continue
        load_id = loads[day]
        listed = [{**r, "problem": "outside window"} for r in outside_rows.get(load_id, [])] + [
            {**r, "problem": "in the future"} for r in future_rows.get(day, [])
        ]
        reports[day] = WindowReport(
            load_id, outside.get(load_id, 0), sum(t.future for t in tag_days), listed[:samples]
        )
    return reports


@dataclass(frozen=True)
class QualityReport:
    points: int
    good: int
    worst: list[dict[str, object]]

    @property
    def ratio(self) -> float | None:
        return self.good / self.points if self.points else None


def quality_report(summary: Summary, worst: int = 10) -> dict[date, QualityReport]:
    """Per day: good-quality points (`Quality = 0`), and the tags with the lowest share."""
    reports = {}
    for day, tag_days in summary.days.items():
        ranked = sorted(tag_days, key=lambda t: (t.good / t.rows, t.tag))
        reports[day] = QualityReport(
            points=sum(t.rows for t in tag_days),
            good=sum(t.good for t in tag_days),
            worst=[{"tag": t.tag, "points": t.rows, "good_ratio": round(t.good / t.rows, 4)}
                   for t in ranked if t.good < t.rows][:worst],
        )
    return reports


@dataclass(frozen=True)
class RangeReport:
    checked: int
    outside: int
    offenders: list[dict[str, object]]


def eu_range_report(summary: Summary, offenders: int = 10) -> dict[date, RangeReport]:
    """Per day: analog values against [MinEU, MaxEU] of their tag (from `AnalogTag`)."""
    ranges = summary.eu_ranges
    reports = {}
    for day, tag_days in summary.days.items():
        checked = [t for t in tag_days if t.tag in ranges]
        ranked = sorted((t for t in checked if t.outside_eu), key=lambda t: (-t.outside_eu, t.tag))
        reports[day] = RangeReport(
            checked=sum(t.values for t in checked),
            outside=sum(t.outside_eu for t in checked),
            offenders=[{"tag": t.tag, "outside": t.outside_eu, "min": t.low, "max": t.high,
                        "min_eu": ranges[t.tag][0], "max_eu": ranges[t.tag][1]}
                       for t in ranked[:offenders]],
        )  # fmt: skip
    return reports


def stored_counts(summary: Summary) -> dict[date, dict[str, int]]:
    """Per day of `summary`: ClickHouse's count of each of its tags (0 for a tag without rows)."""
    return {
        day: {**dict.fromkeys(summary.tags, 0), **{t.tag: t.rows for t in tag_days}}
        for day, tag_days in summary.days.items()
    }


def newest_point(conn: WarehouseConnection, database: str, now: datetime) -> datetime | None:
    """The newest point not dated after `now` (a future-dated row must not hide a lag)."""
    table = conn.query(
        "SELECT max(DateTime) AS newest, count() AS n "
        f"FROM {database}.{HISTORY_TABLE} WHERE DateTime <= {{now:DateTime64(3, 'UTC')}}",
        {"now": naive_utc(now)},
    ).to_pylist()[0]
    if not int(table["n"]):
        return None
    newest: datetime = table["newest"]
    return newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)
