"""What the incremental sync reads (DESIGN §2 late data, §3 watermark defects, §5.5 load).

Never one global watermark, and no lookback re-read: every tag is read from its own newest
loaded point, exclusive, so in steady state each stored point is read once. Tags share a
historian query when their watermarks are close: a tag joins a read that starts before its
own watermark only if what it reads again is at most `overlap` of what it reads new (in
time: `own watermark - read start <= overlap × (end - own watermark)`), so a slow tag never
drags fast ones back. Points that arrive behind a tag's watermark are found by the recount
(`recount_buckets`). No Dagster import.

Historian queries per sync: at most ceil(tags / max_tags) + ceil(log(A / a) / log(1 +
overlap)) + 1, where A and a are the oldest and newest watermark ages (end - watermark): a
read covers the ages [A' / (1 + overlap), A'] from its oldest tag's age A'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class SyncRead:
    """One historian query of the sync: `tags` in [start, end); each tag keeps only its rows
    after its own watermark (`after`)."""

    tags: tuple[str, ...]
    after: tuple[datetime, ...]
    start: datetime
    end: datetime


def plan_sync(
    tags: Sequence[str],
    watermarks: Mapping[str, datetime],
    *,
    now: datetime,
    safety_margin: timedelta,
    fallback_start: datetime,
    horizon: datetime,
    max_tags: int = 500,
    overlap: float = 0.2,
) -> list[SyncRead]:
    """The sync's reads, oldest watermarks first.

    `watermarks`: each tag's newest point in ClickHouse (tags without one start at
    `fallback_start`, inclusive). Nothing before `horizon` is read: older late data is the
    nightly refresh's job. `end` is `now - safety_margin`, the historian's real-time window.
    """
    if max_tags < 1 or overlap < 0:
        raise ValueError(f"max_tags must be positive and overlap not negative: {max_tags}, {overlap}")
    end = now - safety_margin
    floor = horizon - ONE_MS
    after: dict[str, datetime] = {}
    for tag in tags:
        mark = watermarks.get(tag)
        moment = max(mark if mark is not None else fallback_start - ONE_MS, floor)
        if moment + ONE_MS < end:
            after[tag] = moment
    reads: list[SyncRead] = []
    group: list[str] = []
    for tag in sorted(after, key=lambda t: (after[t], t)):
        if group:
            first = after[group[0]]
            if len(group) >= max_tags or after[tag] - first > overlap * (end - after[tag]):
                reads.append(_read(group, after, end))
                group = []
        group.append(tag)
    if group:
        reads.append(_read(group, after, end))
    return reads


def _read(group: list[str], after: Mapping[str, datetime], end: datetime) -> SyncRead:
    return SyncRead(tuple(group), tuple(after[t] for t in group), after[group[0]] + ONE_MS, end)


def recount_buckets(
    since: datetime, end: datetime, bucket: timedelta, epoch: datetime
) -> list[tuple[datetime, datetime]]:
    """[start, end) buckets covering [since, end), aligned to `bucket` from `epoch` (the last
    one ends at `end`)."""
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be positive, got {bucket}")
    start = epoch + ((since - epoch) // bucket) * bucket
    buckets = []
    while start < end:
        buckets.append((start, min(start + bucket, end)))
        start += bucket
    return buckets
