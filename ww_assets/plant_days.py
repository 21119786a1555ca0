"""Where the history partitions start on embedded defaults: the emulated plant's first day.

With a real historian the first day is the user's choice (WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME,
default 2025-01-01); asking SQL Server for its oldest point would cost a scan. The emulator's
counts are indexed, so a few one-day counts find its first day: the plant's days are contiguous
up to now (or its newest point), so the search doubles back from today to an empty day, then
halves the gap. No Dagster import.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

from ww_assets.config import Settings
from ww_assets.historian import EmulatorHistorian, HistorianClient
from ww_assets.history_query import day_bounds

MAX_DAYS_BACK = 20 * 366
"""How far back the search looks (a plant older than that starts at this day)."""


def first_plant_day(client: HistorianClient, today: date) -> date | None:
    """The first UTC day with points of the historian's tags, when their days are contiguous
    and the newest is today or yesterday; None otherwise."""
    tags = [t.name for t in client.list_tags()]
    if not tags:
        return None

    def has_points(day: date) -> bool:
        return any(client.count_points(tags, *day_bounds(day)).values())

    newest = next((d for d in (today, today - timedelta(days=1)) if has_points(d)), None)
    if newest is None:
        return None
    inside, step = newest, 1  # `inside` has points; look for an empty day before it
    while True:
        probe = max(newest - timedelta(days=step), today - timedelta(days=MAX_DAYS_BACK))
        if probe == inside:
            return inside
        if not has_points(probe):
            break
        inside, step = probe, step * 2
    outside = probe  # empty; every day in (outside, inside] has points
    while (inside - outside).days > 1:
        middle = outside + (inside - outside) // 2
        if has_points(middle):
            inside = middle
        else:
            outside = middle
    return inside


def with_plant_first_day(settings: Settings, today: date | None = None) -> Settings:
    """`settings` with the history partitions starting at the emulated plant's first day, on
    embedded defaults when WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME is unset; else unchanged
    (also when there is no plant yet)."""
    if settings.backfill_oldest_time_explicit or settings.wonderware_host:
        return settings
    if not settings.historian_sqlite.exists():
        return settings
    client = EmulatorHistorian(settings.historian_sqlite, settings.tag_types,
                               server_timezone=settings.emulator_timezone)  # fmt: skip
    first = first_plant_day(client, today or datetime.now(timezone.utc).date())
    if first is None:
        return settings
    oldest = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    return dataclasses.replace(settings, backfill_oldest_time=oldest)
