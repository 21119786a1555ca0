"""Which windows the incremental sync re-reads (DESIGN §2 late data, §3 watermark defects).

Never one global watermark: every tag starts from its own newest loaded point minus a
lookback, so a slow tag, or a store-and-forward burst behind the newest point, is still read.
Per chunk, tags that are current share one window and tags that are behind (slow, late or
without data) share another, so a chunk costs at most two historian queries. No Dagster import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class SyncWindow:
    chunk: str
    tags: tuple[str, ...]
    start: datetime
    end: datetime
    behind: bool
    """True for the window of tags whose newest loaded point is older than the lookback."""


def plan_sync(
    tags_by_chunk: Mapping[str, Sequence[str]],
    watermarks: Mapping[str, datetime],
    *,
    now: datetime,
    lookback: timedelta,
    safety_margin: timedelta,
    fallback_start: datetime,
    horizon: datetime,
) -> list[SyncWindow]:
    """Windows [start, end) to replace, per chunk.

    `watermarks`: each tag's newest point in ClickHouse (tags without one start at
    `fallback_start`). No window starts before `horizon`: older late data is the nightly
    refresh's job. `end` is `now - safety_margin`, the historian's real-time window.
    """
    end = now - safety_margin
    current_since = end - lookback
    windows: list[SyncWindow] = []
    for chunk in sorted(tags_by_chunk):
        current: dict[str, datetime] = {}
        behind: dict[str, datetime] = {}
        for tag in tags_by_chunk[chunk]:
            newest = watermarks.get(tag)
            start = newest - lookback if newest is not None else fallback_start
            is_current = newest is not None and newest >= current_since
            (current if is_current else behind)[tag] = start
        for group, is_behind in ((current, False), (behind, True)):
            if not group:
                continue
            start = max(min(group.values()), horizon)
            if start < end:
                windows.append(SyncWindow(chunk, tuple(sorted(group)), start, end, is_behind))
    return windows
