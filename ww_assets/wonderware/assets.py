"""The tag catalog and the day × tag-chunk history assets."""

import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from functools import partial
from typing import NamedTuple

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ww_assets.catalog import refresh_catalog
from ww_assets.config import Settings
from ww_assets.gc_frozen import gc_frozen
from ww_assets.history_query import day_bounds
from ww_assets.history_store import SliceStats, read_active_tags, replace_slice
from ww_assets.read_ahead import ReadsAhead
from ww_assets.warehouse import HeldSessions, Warehouse
from ww_assets.wonderware.partitions import (
    ONLY_TAGS_TAG,
    ROWS_READ,
    TAG_CHUNKS,
    history_partitions,
    only_tags,
    split_key,
)
from ww_assets.wonderware.resources import (
    HistorianResource,
    TagCacheResource,
    WarehouseResource,
)
from ww_assets.wonderware.retries import (
    permanent_faults_fail_now,
    step_retry_policy,
    with_retries,
)

TAGS_KEY = dg.AssetKey(["wonderware", "tags"])
HISTORY_KEY = dg.AssetKey(["wonderware", "history"])


def build_tags_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=TAGS_KEY,
        group_name="wonderware",
        kinds={"sqlserver", "clickhouse"},
        pool="historian",
        retry_policy=step_retry_policy(settings),
    )
    def tags(
        context: dg.AssetExecutionContext,
        historian: HistorianResource,
        warehouse: WarehouseResource,
        tag_cache: TagCacheResource,
    ) -> dg.MaterializeResult:
        """Tag catalog (`WonderwareTags`): the historian's tags of the configured types
        (`Sys*` excluded), each in a stable tag chunk. Registers new chunks as partitions of
        `wonderware/history` and refreshes the Redis tag-list cache."""
        discovered = with_retries(
            context, "listing the historian's tags", historian.client().list_tags,
            settings.backoff(),
        )
        with permanent_faults_fail_now("refreshing the tag catalog"):
            # Every chunk is (re)registered, the known ones being no-ops, before the catalog
            # is written: a run that fails in between leaves the catalog to find again.
            change = refresh_catalog(
                discovered, warehouse.warehouse(), settings.tag_chunk_size,
                partial(context.instance.add_dynamic_partitions, TAG_CHUNKS.name),
            )  # fmt: skip
        cached = tag_cache.cache(context.log.warning).put(change.tags)
        context.log.info(
            f"{len(change.tags)} tags in {len(change.chunks)} chunks; "
            f"{len(change.new_tags)} new, {len(change.retired_tags)} retired; "
            f"new chunks: {', '.join(change.new_chunks) or 'none'}"
        )
        if change.initial:
            context.log.info(
                "first catalog: launch a backfill of wonderware/history over the days you need"
            )
        return dg.MaterializeResult(
            metadata={
                "tags": len(change.tags),
                "chunks": len(change.chunks),
                "new_tags": len(change.new_tags),
                "retired_tags": len(change.retired_tags),
                "new_tag_names": dg.MetadataValue.json(change.new_tags[:200]),
                "chunks_with_new_tags": dg.MetadataValue.json(change.chunks_with_new_tags),
                # what the new-tag sensor loads (the first catalog is backfilled by a person)
                "new_tags_by_chunk": dg.MetadataValue.json(
                    {} if change.initial else change.new_tags_by_chunk
                ),
                "initial_catalog": change.initial,
                "tag_cache_refreshed": cached,
            }
        )

    return tags


def build_history_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=HISTORY_KEY,
        deps=[TAGS_KEY],
        group_name="wonderware",
        kinds={"clickhouse"},
        partitions_def=history_partitions(settings.backfill_oldest_time),
        backfill_policy=dg.BackfillPolicy.multi_run(settings.max_partitions_per_run),
        pool="historian",
        retry_policy=step_retry_policy(settings),
    )
    def history(
        context: dg.AssetExecutionContext,
        historian: HistorianResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Raw historian points (`WonderwareHistory`) for one UTC day × one tag chunk.

        Each partition replaces exactly its slice: the stored points of the chunk's tags in
        [day, day + 1) UTC, read with Full retrieval and `wwTimeZone = 'UTC'`, no synthetic
        initial rows, no boundary duplicates. Reruns and range runs leave the same rows.
        Each partition's metadata gives its own rows, tags, min/max DateTime, seconds and
        rows/s; `run_*` are the figures of the run that loaded it."""
        started = time.monotonic()
        client = historian.client()
        keys = sorted(context.partition_keys)
        total = SliceStats()
        # One session serves consecutive partitions (`HeldSessions`: its background merges go
        # on); a sync or check that waits gets in after at most 5 s and one partition.
        with gc_frozen(), HeldSessions(warehouse.warehouse()) as store:
            with permanent_faults_fail_now("reading the tag chunks from WonderwareTags"):
                tags_by_chunk = read_active_tags(store)
            only = only_tags(context.run.tags)
            if only is not None:  # new tags: their chunk-mates' slices stay untouched, unread
                tags_by_chunk = {c: [t for t in ts if t in only] for c, ts in tags_by_chunk.items()}
                context.log.info(f"loading only the slices of {len(only)} tags ({ONLY_TAGS_TAG})")
            slices = [_Slice.of(key, tags_by_chunk) for key in keys]
            # The next partition's read starts as soon as the current one is fetched whole.
            # A chunk whose tags are all retired reads nothing: their stored history stays.
            opens = [partial(client.read_history, s.tags, s.start, s.end) if s.tags
                     else partial(iter, ()) for s in slices]  # fmt: skip
            with ReadsAhead(opens) as reads:
                for index, part in enumerate(slices):
                    read: dict[str, int] = {}
                    stats = with_retries(
                        context,
                        f"partition {part.key}",
                        partial(_copy_read, reads, index, store, part, read),
                        settings.backoff(),
                    )
                    total.merge(stats)
                    if stats.rejected:
                        context.log.warning(
                            f"partition {part.key}: the historian returned {stats.rejected} "
                            "rows without a DateTime; they cannot be stored and were skipped"
                        )
                    context.log.info(
                        f"partition {index + 1}/{len(keys)}: {part.chunk} {part.day}: "
                        f"{stats.rows} rows from {len(stats.tags_with_rows)}/{len(part.tags)} "
                        f"tags in {stats.seconds:.2f}s"
                        + ("" if part.tags else " (every tag of the chunk is retired)")
                    )
                    context.add_asset_metadata(
                        {**_partition_metadata(stats), ROWS_READ: dg.MetadataValue.json(read)},
                        partition_key=part.key,
                    )
        elapsed = time.monotonic() - started
        context.log.info(
            f"run total: {total.rows} rows from {len(total.tags_with_rows)} tags in "
            f"{len(keys)} partitions in {elapsed:.1f}s"
        )
        # Each partition's event carries its own figures (above), then these of its run.
        run = {
            "partitions_in_run": len(keys),
            "run_rows": total.rows,
            "run_duration_s": round(elapsed, 3),
            "run_rows_per_s": round(total.rows / elapsed, 1) if elapsed > 0 else 0.0,
            **{f"run_{name}": value for name, value in client.load.metadata().items()},
        }
        for key in keys:
            context.add_asset_metadata(run, partition_key=key)
        return dg.MaterializeResult()

    return history


def _partition_metadata(stats: SliceStats) -> dict[str, object]:
    """What one partition's materialization shows: its own rows, tags, time span and speed."""
    return {
        "rows": stats.rows,
        "tags": len(stats.tags_with_rows),
        "rows_rejected": stats.rejected,
        "min_datetime": stats.min_time.isoformat() if stats.min_time else "",
        "max_datetime": stats.max_time.isoformat() if stats.max_time else "",
        "duration_s": round(stats.seconds, 3),
        "rows_per_s": round(stats.rows / stats.seconds, 1) if stats.seconds > 0 else 0.0,
    }


class _Slice(NamedTuple):
    """A history partition: its chunk's tags over one UTC day."""

    key: str
    chunk: str
    day: date
    tags: list[str]
    start: datetime
    end: datetime

    @classmethod
    def of(cls, key: str, tags_by_chunk: dict[str, list[str]]) -> "_Slice":
        chunk, day = split_key(key)
        if chunk not in tags_by_chunk:
            raise dg.Failure(
                f"tag chunk {chunk} is not in WonderwareTags: materialize wonderware/tags first",
                allow_retries=False,
            )
        return cls(key, chunk, day, tags_by_chunk[chunk], *day_bounds(day))


def _copy_read(
    reads: ReadsAhead[pa.RecordBatch],
    index: int,
    store: Warehouse,
    part: _Slice,
    read: dict[str, int],
) -> SliceStats:
    """Replace `part`'s slice with read `index` of `reads` (a fresh read on a retry); `read`
    gets the rows per tag the historian returned."""
    read.clear()
    read.update(dict.fromkeys(part.tags, 0))
    with reads.read(index) as batches:
        return replace_slice(store, part.tags, part.start, part.end, _tally(batches, read))


def _tally(batches: Iterable[pa.RecordBatch], read: dict[str, int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for item in pc.value_counts(batch.column("TagName")).to_pylist():
            read[item["values"]] = read.get(item["values"], 0) + item["counts"]
        yield batch
