"""The assets of the wonderware domain: the tag catalog, the day × tag-chunk history, the
incremental sync and the 1-minute rollup."""

import time
from datetime import date, datetime, timedelta, timezone
from functools import partial

import dagster as dg

from ww_assets.config import Settings
from ww_assets.gc_frozen import gc_frozen
from ww_assets.history_query import day_bounds
from ww_assets.history_store import ROLLUP_TABLE, SliceStats
from ww_assets.read_ahead import ReadsAhead
from ww_assets.sync_plan import own_watermarks, plan_sync, silent_tags
from ww_assets.wonderware.history_load import Slice, copy_read, partition_metadata
from ww_assets.wonderware.keys import HISTORY_KEY, ROLLUP_KEY, SYNC_KEY, TAGS_KEY
from ww_assets.wonderware.partitions import (
    ONLY_TAGS_TAG,
    ROWS_READ,
    TAG_CHUNKS,
    daily_partitions,
    history_key,
    history_partitions,
    only_tags,
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
from ww_assets.wonderware.rollup_gate import COVERAGE_SCHEMA, coverage_records, gate_message
from ww_assets.wonderware.sync_steps import (
    append_reads,
    first_sync_start,
    limit_to_cached_tags,
    previous_mark,
    recount_late_points,
)
from ww_assets.wonderware.verdicts import partition_verdicts


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
            context, "listing the historian's tags", historian.list_tags,
            settings.backoff(),
        )
        with permanent_faults_fail_now("refreshing the tag catalog"):
            # Every chunk is (re)registered, the known ones being no-ops, before the catalog
            # is written: a run that fails in between leaves the catalog to find again.
            change = warehouse.refresh_catalog(
                discovered, settings.tag_chunk_size,
                partial(context.instance.add_dynamic_partitions, TAG_CHUNKS.name),
            )  # fmt: skip
        cached = tag_cache.cache_tags(change.tags, context.log.warning)
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
        keys = sorted(context.partition_keys)
        total = SliceStats()
        # One session serves consecutive partitions (its background merges go on); a sync or
        # check that waits gets in after at most 5 s and one partition.
        with gc_frozen(), historian.metered() as load, warehouse.held_session():
            with permanent_faults_fail_now("reading the tag chunks from WonderwareTags"):
                tags_by_chunk = warehouse.active_tags()
            only = only_tags(context.run.tags)
            if only is not None:  # new tags: their chunk-mates' slices stay untouched, unread
                tags_by_chunk = {c: [t for t in ts if t in only] for c, ts in tags_by_chunk.items()}
                context.log.info(f"loading only the slices of {len(only)} tags ({ONLY_TAGS_TAG})")
            slices = [Slice.of(key, tags_by_chunk) for key in keys]
            # The next partition's read starts as soon as the current one is fetched whole.
            # A chunk whose tags are all retired reads nothing: their stored history stays.
            opens = [partial(historian.read_history, s.tags, s.start, s.end) if s.tags
                     else partial(iter, ()) for s in slices]  # fmt: skip
            with ReadsAhead(opens) as reads:
                for index, part in enumerate(slices):
                    read: dict[str, int] = {}
                    stats = with_retries(
                        context,
                        f"partition {part.key}",
                        partial(copy_read, reads, index, warehouse, part, read),
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
                        {**partition_metadata(stats), ROWS_READ: dg.MetadataValue.json(read)},
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
            **{f"run_{name}": value for name, value in load.metadata().items()},
        }
        for key in keys:
            context.add_asset_metadata(run, partition_key=key)
        return dg.MaterializeResult()

    return history


def build_sync_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=SYNC_KEY,
        deps=[TAGS_KEY],
        group_name="wonderware",
        kinds={"clickhouse"},
        pool="historian_sync",
        retry_policy=step_retry_policy(settings),
    )
    def history_sync(
        context: dg.AssetExecutionContext,
        historian: HistorianResource,
        warehouse: WarehouseResource,
        tag_cache: TagCacheResource,
    ) -> dg.MaterializeResult:
        """Today's points, within about a minute: every tag is read from where the previous
        sync's reads ended up to now minus the safety margin, and its new points are appended
        to `WonderwareHistory` (one warehouse session): each point is read once. Every
        WONDERWARE_PIPELINE_SYNC_SWEEP_INTERVAL seconds, tags silent for longer than the
        lookback are also read from their own newest loaded point: a store-and-forward burst
        of a silent tag arrives with that sync. Points that arrive behind a tag's newest
        point are found by the recount, every
        WONDERWARE_PIPELINE_SYNC_RECOUNT_INTERVAL seconds: per tag and quarter hour since the
        previous recount minus WONDERWARE_PIPELINE_SYNC_LOOKBACK, the historian's count
        against ClickHouse's, and only what differs is read again."""
        started = time.monotonic()
        now = datetime.now(timezone.utc)
        horizon = day_bounds(now.date() - timedelta(days=settings.refresh_days))[0]
        with historian.metered() as load, warehouse.held_session():
            with permanent_faults_fail_now("reading the catalog and watermarks"):
                tags_by_chunk, before = warehouse.catalog_and_watermarks(horizon)
            if not tags_by_chunk:
                raise dg.Failure(
                    "the tag catalog is empty: materialize wonderware/tags first",
                    allow_retries=False,
                )
            tags_by_chunk = limit_to_cached_tags(tags_by_chunk, tag_cache, context)
            tags = sorted(t for chunk_tags in tags_by_chunk.values() for t in chunk_tags)
            fallback = horizon
            if any(t not in before for t in tags):
                fallback, why = first_sync_start(context.instance, now, settings)
                if not before:
                    context.log.info(f"first sync on an empty table: starting {why}")
            end = now - timedelta(seconds=settings.sync_safety_margin_s)
            read_until = previous_mark(context.instance, "read_until")
            swept_until = previous_mark(context.instance, "swept_until")
            sweep = read_until is None or swept_until is None or (
                (end - swept_until).total_seconds() >= settings.sync_sweep_interval_s
            )
            reads = plan_sync(
                tags,
                before,
                now=now,
                safety_margin=timedelta(seconds=settings.sync_safety_margin_s),
                fallback_start=fallback,
                horizon=horizon,
                read_until=read_until,
                sweep=sweep,
                silent_after=timedelta(seconds=settings.sync_lookback_s),
                max_tags=settings.sync_tags_per_read,
            )
            # tags silent until now and not swept: one that wakes up brings its burst along
            silent = {} if sweep or read_until is None else silent_tags(
                own_watermarks(tags, before, fallback, horizon), min(read_until, end),
                timedelta(seconds=settings.sync_lookback_s),
            )  # fmt: skip
            total = with_retries(
                context, "sync",
                partial(append_reads, historian, warehouse, reads, silent, settings.sync_tags_per_read),
                settings.backoff(),
            )  # fmt: skip
            context.log.info(
                f"{len(reads)} historian reads for {sum(len(r.tags) for r in reads)} tags: "
                f"{total.rows} new rows"
            )
            recounted_until = previous_mark(context.instance, "recounted_until")
            recount = None
            if recounted_until is None:
                recounted_until = end  # the first sync read everything up to `end`
            elif (end - recounted_until).total_seconds() >= settings.sync_recount_interval_s:
                since = max(recounted_until - timedelta(seconds=settings.sync_lookback_s), horizon)
                recount = with_retries(
                    context, "sync recount",
                    partial(recount_late_points, historian, warehouse, tags, since, end, settings.sync_tags_per_read),
                    settings.backoff(),
                )  # fmt: skip
                recounted_until = end
                context.log.info(
                    f"recount {since:%H:%M} → {end:%H:%M}: {len(recount.repaired)} tag "
                    f"intervals differed, {recount.stats.rows} rows read again"
                )
                total.merge(recount.stats)
            after = warehouse.tag_watermarks(horizon)
        newest = max(after.values(), default=None)
        advanced = sum(1 for tag, moment in after.items() if tag not in before or moment > before[tag])
        lag = (datetime.now(timezone.utc) - newest).total_seconds() if newest else None
        return dg.MaterializeResult(
            metadata={
                "rows": total.rows,
                "historian_reads_planned": len(reads),
                "tags_with_new_points": advanced,
                "read_until": end.isoformat(),
                "swept": sweep,
                "swept_until": (end if sweep else swept_until or end).isoformat(),
                "recounted": recount is not None,
                "recounted_until": recounted_until.isoformat(),
                "recount_repaired": dg.MetadataValue.json(
                    [f"{tag} {start:%Y-%m-%d %H:%M}" for tag, start in recount.repaired[:100]]
                    if recount else []
                ),
                "oldest_point_loaded": total.min_time.isoformat() if total.min_time else "",
                "newest_point_loaded": total.max_time.isoformat() if total.max_time else "",
                "newest_point": newest.isoformat() if newest else "",
                "lag_seconds": dg.MetadataValue.float(round(lag, 1) if lag is not None else -1.0),
                "duration_s": round(time.monotonic() - started, 3),
                **load.metadata(),
            }
        )

    return history_sync


def build_rollup_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=ROLLUP_KEY,
        deps=[
            dg.AssetDep(
                HISTORY_KEY,
                partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                    partition_dimension_name="date"
                ),
            )
        ],
        group_name="wonderware",
        kinds={"clickhouse"},
        partitions_def=daily_partitions(settings.backfill_oldest_time),
    )
    def history_1min(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """1-minute rollup (`WonderwareHistoryAggregated`) of one UTC day: per tag and minute
        the first, average, min and max value, the point count and the average and minimum
        quality. Runs only when every tag chunk of the day is loaded and its blocking checks
        passed on its latest load; otherwise fails naming the partitions and checks. Replaces
        exactly its day."""
        day = date.fromisoformat(context.partition_key)
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        by_key = partition_verdicts(context.instance, [history_key(c, day) for c in chunks])
        verdicts = [by_key[k] for k in sorted(by_key)]
        problem = gate_message(day, verdicts)
        if problem:
            raise dg.Failure(
                description=problem,
                metadata={"coverage": dg.MetadataValue.table(coverage_records(verdicts), COVERAGE_SCHEMA)},
                allow_retries=False,
            )
        stats = warehouse.replace_rollup_day(day)
        context.log.info(
            f"{day}: {stats.rows} tag-minutes from {stats.points} points of {stats.tags} tags "
            f"into {ROLLUP_TABLE} in {stats.seconds:.2f}s"
        )
        return dg.MaterializeResult(
            metadata={
                "rows": stats.rows,
                "points": stats.points,
                "tags": stats.tags,
                "duration_s": round(stats.seconds, 3),
                "coverage": dg.MetadataValue.table(coverage_records(verdicts), COVERAGE_SCHEMA),
            }
        )

    return history_1min
