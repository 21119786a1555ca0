"""The steps of the incremental sync: appending its planned reads, the recount of late
points, and what it takes from the instance (the previous sync's marks, the first start)."""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Protocol

import dagster as dg
import pyarrow as pa

from ww_assets.config import Settings
from ww_assets.history_query import day_bounds
from ww_assets.history_store import SliceStats
from ww_assets.read_ahead import ReadsAhead
from ww_assets.reconcile_sql import PointCounter
from ww_assets.sync_plan import SyncRead, recount_buckets, sweep_reads
from ww_assets.wonderware.keys import HISTORY_KEY, SYNC_KEY
from ww_assets.wonderware.partitions import split_key
from ww_assets.wonderware.resources import TagCacheResource, WarehouseResource

RECOUNT_BUCKET = timedelta(minutes=15)
"""The recount compares counts per tag and quarter hour; a difference re-reads that much."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class HistoryReader(PointCounter, Protocol):
    """What the sync reads the historian through: the `HistorianResource` (the bench passes a
    metered client)."""

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime, /
    ) -> Iterator[pa.RecordBatch]: ...


def append_reads(
    historian: HistoryReader,
    warehouse: WarehouseResource,
    reads: list[SyncRead],
    silent: Mapping[str, datetime] | None = None,
    max_tags: int = 500,
) -> SliceStats:
    """Every read's rows after their tag's watermark, appended in one warehouse session; the
    next read is fetched while the current one is inserted. `silent`: tags without a point for
    a while and not swept by `reads`, with their watermark; those with new rows now woke up,
    and what they stored between their watermark and the reads' start (a store-and-forward
    burst that came with the live points) is read too."""
    stats = _append(historian, warehouse, reads)
    woken = {tag: mark for tag, mark in (silent or {}).items() if tag in stats.tags_with_rows}
    if woken:
        stats.merge(
            _append(historian, warehouse, sweep_reads(woken, min(r.start for r in reads), max_tags))
        )
    return stats


def _append(
    historian: HistoryReader, warehouse: WarehouseResource, reads: list[SyncRead]
) -> SliceStats:
    if not reads:
        return SliceStats()
    after: dict[str, datetime] = {}
    for read in reads:  # a swept tag is in two reads: its own watermark is the earlier mark
        for tag, mark in zip(read.tags, read.after):
            after[tag] = min(mark, after.get(tag, mark))
    opens = [partial(historian.read_history, r.tags, r.start, r.end) for r in reads]

    def batches() -> Iterator[pa.RecordBatch]:
        with ReadsAhead(opens) as ahead:
            for index in range(len(reads)):
                with ahead.read(index) as part:
                    yield from part

    return warehouse.append_after(after, max(r.end for r in reads), batches())


@dataclass
class Recount:
    stats: SliceStats = field(default_factory=SliceStats)
    repaired: list[tuple[str, datetime]] = field(default_factory=list)


def recount_late_points(
    historian: HistoryReader,
    warehouse: WarehouseResource,
    tags: list[str],
    since: datetime,
    end: datetime,
    per_read: int,
) -> Recount:
    """Per tag and quarter hour of [since, end): the historian's count against ClickHouse's;
    each quarter hour that differs is replaced for the tags that differ (late points behind
    a newer one, or a point the historian revised away)."""
    buckets = recount_buckets(since, end, RECOUNT_BUCKET, _EPOCH)
    result = Recount()
    if not buckets or not tags:
        return result
    stored = warehouse.counts_by_bucket(
        tags, buckets[0][0], end, int(RECOUNT_BUCKET.total_seconds())
    )
    for start, stop in buckets:
        differing: list[str] = []
        for first in range(0, len(tags), per_read):
            group = tags[first:first + per_read]
            counted = historian.count_points(group, start, stop)
            differing += [t for t in group if counted.get(t, 0) != stored.get((t, start), 0)]
        if differing:
            stats = warehouse.replace_slice(
                differing, start, stop, historian.read_history(differing, start, stop)
            )
            result.stats.merge(stats)
            result.repaired += [(t, start) for t in differing]
    return result


def previous_mark(instance: dg.DagsterInstance, name: str) -> datetime | None:
    """A moment the previous sync recorded: where its reads (`read_until`), its sweep of
    silent tags (`swept_until`) or its recount (`recounted_until`) ended."""
    event = instance.get_latest_materialization_event(SYNC_KEY)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get(name) if materialization else None
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value.value))
    except ValueError:
        return None


def limit_to_cached_tags(
    tags_by_chunk: dict[str, list[str]],
    tag_cache: TagCacheResource,
    context: dg.AssetExecutionContext,
) -> dict[str, list[str]]:
    """The Redis tag list rules between catalog refreshes; the catalog gives the chunks."""
    every = sorted(t for tags in tags_by_chunk.values() for t in tags)
    cached = tag_cache.cached_tags_or_cache(every, context.log.warning)
    if cached is None:
        return tags_by_chunk
    wanted = set(cached)
    return {c: [t for t in tags if t in wanted] for c, tags in tags_by_chunk.items()}


def first_sync_start(
    instance: dg.DagsterInstance, now: datetime, settings: Settings
) -> tuple[datetime, str]:
    """Where a tag without loaded points starts: the end of the newest loaded daily
    partition, else WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK before now."""
    days = [split_key(k)[1] for k in instance.get_materialized_partitions(HISTORY_KEY)]
    if days:
        end = day_bounds(max(days))[1]
        return end, f"at the end of the newest loaded daily partition ({end:%Y-%m-%d %H:%M} UTC)"
    start = now - timedelta(seconds=settings.sync_initial_lookback_s)
    return start, f"{settings.sync_initial_lookback_s} s ago (no daily partition loaded yet)"
