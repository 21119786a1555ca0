"""Counts on both sides: the historian's per tag and day, ClickHouse's per (day, tag), and
the two side by side (what the reconciliation and the row-count check compare). No Dagster
import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Protocol

from ww_assets.check_sql import UTC_DAY, days_params
from ww_assets.history_query import day_bounds
from ww_assets.history_store import HISTORY_TABLE, SLICE
from ww_assets.warehouse import Warehouse, WarehouseConnection


class PointCounter(Protocol):
    """What counts the historian's points: a historian client, or the Dagster resource."""

    def count_points(
        self, tags: Sequence[str], start: datetime, end: datetime, /
    ) -> dict[str, int]: ...


def source_counts(
    historian: PointCounter, tags: list[str], days: list[date]
) -> dict[date, dict[str, int]]:
    """Per day: the historian's count of each of `tags` in [day, day + 1) (one `COUNT` a day)."""
    return {day: historian.count_points(tags, *day_bounds(day)) if tags else {} for day in days}


def side_by_side(
    expected: Mapping[date, dict[str, int]],
    stored: Mapping[tuple[date, str], int],
    tags: list[str],
    days: list[date],
) -> dict[date, tuple[dict[str, int], dict[str, int]]]:
    """Per day: the historian's count of each of `tags` (`expected`, from `source_counts`) and
    ClickHouse's (`stored`, from `counts_by_day_and_tag`; 0 for a tag without rows)."""
    return {
        day: (expected[day], {tag: stored.get((day, tag), 0) for tag in tags}) for day in days
    }


def compare_counts(
    warehouse: Warehouse, historian: PointCounter, tags: list[str], days: list[date]
) -> dict[date, tuple[dict[str, int], dict[str, int]]]:
    """`side_by_side` for ascending `days`: ClickHouse's counts first (one query for all days,
    in a session of its own, so the lock is not held while the historian counts)."""
    with warehouse.connect() as conn:
        stored = counts_by_day_and_tag(conn, warehouse.database, tags, days[0], days[-1])
    return side_by_side(source_counts(historian, tags, days), stored, tags, days)


def counts_by_day_and_tag(
    conn: WarehouseConnection, database: str, tags: list[str], first: date, last: date
) -> dict[tuple[date, str], int]:
    """Rows per (UTC day, tag) for the days first..last."""
    table = conn.query(
        f"SELECT {UTC_DAY} AS day, TagName, count() AS n "
        f"FROM {database}.{HISTORY_TABLE} WHERE {SLICE} GROUP BY day, TagName",
        days_params(tags, [first, last]),
    )
    return {(r["day"], r["TagName"]): int(r["n"]) for r in table.to_pylist()}
