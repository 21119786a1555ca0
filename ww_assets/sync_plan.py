"""What the incremental sync reads: late data found, no global watermark, each point read once.

Never one global watermark for what is loaded, and no lookback re-read. Each sync reads every
tag from where the previous sync's reads ended (`read_until`): a point behind that which was
not stored then arrived late, so in steady state each stored point is read once. Late points
are found two ways. A tag silent for longer than `silent_after` is swept now and then from its
own newest loaded point (a store-and-forward burst of a silent tag lies after it); tags share
a sweep read when their watermarks are close (a tag joins a read that starts before its own
watermark only if `own watermark - read start <= overlap × (end - own watermark)`). Points
behind a tag's newest point are found by the recount (`recount_buckets`). No Dagster import.

Historian queries per sync: ceil(tags / max_tags), plus on a sweep at most
ceil(silent tags / max_tags) + ceil(log(A / a) / log(1 + overlap)) + 1, where A and a are the
oldest and newest ages (read_until - watermark) of the silent tags (a read covers the ages
[A' / (1 + overlap), A'] from its oldest tag's age A'). Without `read_until` (the first sync)
every tag is read from its own watermark that way.
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
    read_until: datetime | None = None,
    sweep: bool = True,
    silent_after: timedelta = timedelta(minutes=15),
    max_tags: int = 500,
    overlap: float = 0.2,
) -> list[SyncRead]:
    """The sync's reads, oldest starts first.

    `watermarks`: each tag's newest point in ClickHouse (tags without one start at
    `fallback_start`, inclusive). `read_until`: where the previous sync's reads ended. Every
    tag is read from there on (a point behind it that was not there then arrived late): one
    read per `max_tags` tags, nothing read twice. With `sweep` (and always without
    `read_until`), tags silent for longer than `silent_after` are also read from their own
    watermark up to `read_until`, grouped by watermark: a store-and-forward burst after a
    tag's newest point arrives. Nothing before `horizon` is read: older late data is the
    nightly refresh's job. `end` is `now - safety_margin`, the historian's real-time window.
    """
    if max_tags < 1 or overlap < 0:
        raise ValueError(f"max_tags must be positive and overlap not negative: {max_tags}, {overlap}")
    end = now - safety_margin
    floor = horizon - ONE_MS
    own = own_watermarks(tags, watermarks, fallback_start, horizon)
    if read_until is None or read_until <= floor + ONE_MS:
        return sweep_reads({t: m for t, m in own.items() if m + ONE_MS < end}, end, max_tags, overlap)
    split = min(read_until, end)
    reads: list[SyncRead] = []
    if sweep:
        reads += sweep_reads(silent_tags(own, split, silent_after), split, max_tags, overlap)
    if split < end:
        # the reads after `split`: each tag keeps its rows after its own watermark (a tag
        # swept above has rows in both, none in common)
        current = sorted(own)
        for first in range(0, len(current), max_tags):
            group = current[first:first + max_tags]
            after = tuple(max(own[t], split - ONE_MS) for t in group)
            reads.append(SyncRead(tuple(group), after, split, end))
    return reads


def own_watermarks(
    tags: Sequence[str],
    watermarks: Mapping[str, datetime],
    fallback_start: datetime,
    horizon: datetime,
) -> dict[str, datetime]:
    """Each tag's newest loaded point (just before `fallback_start` for a tag without one),
    never before `horizon`."""
    floor = horizon - ONE_MS
    own: dict[str, datetime] = {}
    for tag in tags:
        mark = watermarks.get(tag)
        own[tag] = max(mark if mark is not None else fallback_start - ONE_MS, floor)
    return own


def silent_tags(
    own: Mapping[str, datetime], split: datetime, silent_after: timedelta
) -> dict[str, datetime]:
    """The tags of `own` without a point in the `silent_after` before `split`."""
    return {t: m for t, m in own.items() if m < split - silent_after and m + ONE_MS < split}


def sweep_reads(
    after: Mapping[str, datetime], end: datetime, max_tags: int = 500, overlap: float = 0.2
) -> list[SyncRead]:
    """Reads of `after`'s tags from their own watermark up to `end`: a tag joins a read that
    starts before its watermark only if what it reads again is at most `overlap` of its span."""
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
