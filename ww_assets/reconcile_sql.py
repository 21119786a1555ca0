"""Counts on both sides: the historian's per tag and day, ClickHouse's per (day, tag), and
the two side by side (what the reconciliation and the row-count check compare). No Dagster
import.
"""

from __future__ import annotations

from datetime import date

from ww_assets.check_sql import UTC_DAY, days_params
from ww_assets.historian import HistorianClient
from ww_assets.history_query import day_bounds
from ww_assets.history_store import HISTORY_TABLE, SLICE
from ww_assets.warehouse import Warehouse, WarehouseConnection

def source_counts(
    client: HistorianClient, tags: list[str], days: list[date]
) -> dict[date, dict[str, int]]:
    """Per day: the historian's count of each of `tags` in [day, day + 1) (one `COUNT` a day)."""
    return {day: client.count_points(tags, *day_bounds(day)) if tags else {} for day in days}


def compare_counts(
    warehouse: Warehouse, client: HistorianClient, tags: list[str], days: list[date]
) -> dict[date, tuple[dict[str, int], dict[str, int]]]:
    """Per day (ascending `days`): the historian's count of each of `tags` and ClickHouse's
    (one query for all days, in a session of its own, so the lock is not held while the
    historian counts)."""
    with warehouse.connect() as conn:
        stored = counts_by_day_and_tag(conn, warehouse.database, tags, days[0], days[-1])
    expected = source_counts(client, tags, days)
    return {
        day: (expected[day], {tag: stored.get((day, tag), 0) for tag in tags}) for day in days
    }


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
