"""What the pipeline asks the historian's `History` table, and its T-SQL rendering.

A `HistoryQuery` carries the predicates of one History query. The SQL Server backend renders it
to T-SQL with every value a `%s` parameter (pymssql quotes them into the batch it sends, so no
value is ever formatted into the SQL here); the emulator answers the same object with the historian's
semantics. No Dagster import: tested directly and reused by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from ww_assets.schema import HISTORY_COLUMNS

RETRIEVAL_MODES = (
    "Cyclic",
    "Delta",
    "Full",
    "Interpolated",
    "BestFit",
    "Average",
    "Integral",
    "Slope",
    "Counter",
    "ValueState",
    "RoundTrip",
    "ConnectionState",
    "StartBound",
    "EndBound",
    "Min",
    "Max",
)
"""History retrieval modes (53498). Only `Full` returns every stored point exactly once."""

COPY_MODES = ("Full",)
"""The retrieval modes a copy can be made with: `Delta` drops a point equal to the one before
it *in the answer*, so what it returns depends on where a window starts (a daily partition and
a sync window disagree); the other modes return computed rows, not stored points."""

TAG_TYPES = {"analog": 1, "discrete": 2, "string": 3, "complex": 4, "event": 5, "summary": 7}
"""`TagRef.TagType` codes (65431), by the names used in configuration."""

ACQUIRED_BY_SYSTEM_DRIVER = 3
"""`Tag.AcquisitionType` of the historian's own system tags (1220349): never copied. A user
tag may well be called `System2.Flow`, so system tags are not told by their name."""

# Bounds are whole microseconds: an exclusive start excludes its microsecond entirely, so a
# start 1 µs before the window selects exactly the points at or after it (to datetime2(7)'s
# 100 ns), without the synthetic initial-value row that an inclusive start returns (53886).
ONE_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class HistoryQuery:
    """The predicates of one query on `History`.

    `start`/`end` are naive datetimes in `time_zone` (`None`: the historian server's local time,
    which is what the historian assumes when the query names no `wwTimeZone`).
    """

    tags: tuple[str, ...]
    start: datetime
    end: datetime
    start_inclusive: bool = False
    end_inclusive: bool = False
    retrieval_mode: str = "Full"
    time_zone: str | None = "UTC"
    version: str = "Latest"

    def __post_init__(self) -> None:
        if not self.tags:
            raise ValueError("a History query needs at least one tag")
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ValueError(
                f"unknown retrieval mode {self.retrieval_mode!r}; one of {', '.join(RETRIEVAL_MODES)}"
            )
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("HistoryQuery bounds are naive datetimes in the query's time zone")


def window_query(
    tags: tuple[str, ...], start_utc: datetime, end_utc: datetime, retrieval_mode: str = "Full"
) -> HistoryQuery:
    """The query for the stored points of `tags` in the half-open UTC window [start, end)."""
    return HistoryQuery(
        tags=tags,
        start=naive_utc(start_utc) - ONE_TICK,
        end=naive_utc(end_utc),
        start_inclusive=False,
        end_inclusive=False,
        retrieval_mode=retrieval_mode,
        time_zone="UTC",
    )


def naive_utc(moment: datetime) -> datetime:
    """`moment` (aware, or naive meaning UTC) as a naive UTC datetime: what pymssql sends, the
    emulator stores and the `{x:DateTime64(3, 'UTC')}` parameters take as text."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[day, day + 1) in UTC: a history partition's window."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def format_datetime(moment: datetime, bound: str = ">=") -> str:
    """The literal of a History bound, ISO 8601 with 7 fractional digits
    (`YYYY-MM-DDTHH:MM:SS.fffffff`): the one form no session language or DATEFORMAT misreads.

    Bounds are whole microseconds: `>` and `<=` take the microsecond's last 100-ns tick, so
    `DateTime > '...59.9999999'` excludes the whole microsecond and `DateTime <= ...` includes it.
    """
    last_tick = "9" if bound in (">", "<=") else "0"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + last_tick


def render_history_tsql(query: HistoryQuery) -> tuple[str, tuple[object, ...]]:
    """T-SQL for `query` in pymssql's `%s` paramstyle, and its parameters.

    Tag names and bounds are parameters only; identifiers come from `HISTORY_COLUMNS`.
    """
    select = ", ".join(
        c.source if c.source == c.name else f"{c.source} AS {c.name}" for c in HISTORY_COLUMNS
    )
    where, params = _history_where(query)
    return f"SELECT {select} FROM History WHERE {where}", params


def render_count_tsql(query: HistoryQuery) -> tuple[str, tuple[object, ...]]:
    """T-SQL counting the rows `render_history_tsql(query)` returns, per tag: the historian's
    side of the row-count check and the reconciliation (same predicates, same parameters)."""
    where, params = _history_where(query)
    return (
        f"SELECT TagName, COUNT(*) AS Points FROM History WHERE {where} GROUP BY TagName",
        params,
    )


def _history_where(query: HistoryQuery) -> tuple[str, tuple[object, ...]]:
    tag_placeholders = ", ".join(["%s"] * len(query.tags))
    start_op = ">=" if query.start_inclusive else ">"
    end_op = "<=" if query.end_inclusive else "<"
    predicates = [
        f"TagName IN ({tag_placeholders})",
        f"DateTime {start_op} %s",
        f"DateTime {end_op} %s",
        "wwRetrievalMode = %s",
        "wwVersion = %s",
    ]
    params: list[object] = [
        *query.tags,
        format_datetime(query.start, start_op),
        format_datetime(query.end, end_op),
        query.retrieval_mode,
        query.version,
    ]
    if query.time_zone is not None:
        predicates.append("wwTimeZone = %s")
        params.append(query.time_zone)
    return " AND ".join(predicates), tuple(params)


def render_tags_tsql(tag_types: tuple[int, ...], placeholder: str = "%s") -> tuple[str, tuple[object, ...]]:
    """The catalog query: the tags of `tag_types` with their description and analog range,
    system-driver tags excluded, in any order. AVEVA keeps the type in `TagRef` and the
    description and acquisition in `Tag` (65431, 1220349). `placeholder` is pymssql's `%s`
    or SQLite's `?` (the emulator runs the same query on its own tables)."""
    if not tag_types:
        raise ValueError("no tag types selected")
    placeholders = ", ".join([placeholder] * len(tag_types))
    sql = (
        "SELECT r.TagName, r.TagType, t.Description, a.MinEU, a.MaxEU, u.Unit "
        "FROM TagRef r "
        "JOIN Tag t ON t.TagName = r.TagName "
        "LEFT JOIN AnalogTag a ON a.TagName = r.TagName "
        "LEFT JOIN EngineeringUnit u ON u.EUKey = a.EUKey "
        f"WHERE r.TagType IN ({placeholders}) AND t.AcquisitionType <> {placeholder}"
    )
    return sql, (*tag_types, ACQUIRED_BY_SYSTEM_DRIVER)
