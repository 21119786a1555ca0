"""The incremental sync: asset, its job, the sensor and schedule that trigger it, and the
nightly refresh of the most recent days (late data the sync's recount did not reach)."""

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial

import dagster as dg
import pyarrow as pa

from ww_assets.config import Settings
from ww_assets.historian import HistorianClient
from ww_assets.history_query import day_bounds
from ww_assets.history_store import (
    SliceStats,
    active_tags_by_chunk,
    append_after,
    counts_by_bucket,
    ensure_schema,
    replace_slice,
    tag_watermarks,
)
from ww_assets.read_ahead import ReadsAhead
from ww_assets.sync_plan import (
    SyncRead,
    own_watermarks,
    plan_sync,
    recount_buckets,
    silent_tags,
    sweep_reads,
)
from ww_assets.warehouse import HeldSessions, Warehouse
from ww_assets.wonderware.assets import HISTORY_KEY, TAGS_KEY
from ww_assets.wonderware.jobs import cron_setting, history_job
from ww_assets.wonderware.partitions import TAG_CHUNKS, complete_days, history_key, split_key
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
from ww_assets.wonderware.sensors import range_tags

SYNC_KEY = dg.AssetKey(["wonderware", "history_sync"])
SYNC_RUN_TAG = "ww/sync"
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


RECOUNT_BUCKET = timedelta(minutes=15)
"""The recount compares counts per tag and quarter hour; a difference re-reads that much."""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
        client = historian.client()
        horizon = day_bounds(now.date() - timedelta(days=settings.refresh_days))[0]
        with HeldSessions(warehouse.warehouse()) as store:
            with permanent_faults_fail_now("reading the catalog and watermarks"):
                with store.connect() as conn:
                    ensure_schema(conn, store.database)
                    tags_by_chunk = active_tags_by_chunk(conn, store.database)
                    before = tag_watermarks(conn, store.database, horizon)
            if not tags_by_chunk:
                raise dg.Failure(
                    "the tag catalog is empty: materialize wonderware/tags first",
                    allow_retries=False,
                )
            tags_by_chunk = _limit_to_cached_tags(tags_by_chunk, tag_cache, context)
            tags = sorted(t for chunk_tags in tags_by_chunk.values() for t in chunk_tags)
            fallback = horizon
            if any(t not in before for t in tags):
                fallback, why = _first_sync_start(context.instance, now, settings)
                if not before:
                    context.log.info(f"first sync on an empty table: starting {why}")
            end = now - timedelta(seconds=settings.sync_safety_margin_s)
            read_until = _previous(context.instance, "read_until")
            swept_until = _previous(context.instance, "swept_until")
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
                partial(_append_reads, client, store, reads, silent, settings.sync_tags_per_read),
                settings.backoff(),
            )  # fmt: skip
            context.log.info(
                f"{len(reads)} historian reads for {sum(len(r.tags) for r in reads)} tags: "
                f"{total.rows} new rows"
            )
            recounted_until = _previous(context.instance, "recounted_until")
            recount = None
            if recounted_until is None:
                recounted_until = end  # the first sync read everything up to `end`
            elif (end - recounted_until).total_seconds() >= settings.sync_recount_interval_s:
                since = max(recounted_until - timedelta(seconds=settings.sync_lookback_s), horizon)
                recount = with_retries(
                    context, "sync recount",
                    partial(_recount, client, store, tags, since, end, settings.sync_tags_per_read),
                    settings.backoff(),
                )  # fmt: skip
                recounted_until = end
                context.log.info(
                    f"recount {since:%H:%M} → {end:%H:%M}: {len(recount.repaired)} tag "
                    f"intervals differed, {recount.stats.rows} rows read again"
                )
                total.merge(recount.stats)
            with store.connect() as conn:
                after = tag_watermarks(conn, store.database, horizon)
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
                **client.load.metadata(),
            }
        )

    return history_sync


def _append_reads(
    client: HistorianClient,
    store: Warehouse,
    reads: list[SyncRead],
    silent: Mapping[str, datetime] | None = None,
    max_tags: int = 500,
) -> SliceStats:
    """Every read's rows after their tag's watermark, appended in one warehouse session; the
    next read is fetched while the current one is inserted. `silent`: tags without a point for
    a while and not swept by `reads`, with their watermark; those with new rows now woke up,
    and what they stored between their watermark and the reads' start (a store-and-forward
    burst that came with the live points) is read too."""
    stats = _append(client, store, reads)
    woken = {tag: mark for tag, mark in (silent or {}).items() if tag in stats.tags_with_rows}
    if woken:
        stats.merge(_append(client, store, sweep_reads(woken, min(r.start for r in reads), max_tags)))
    return stats


def _append(client: HistorianClient, store: Warehouse, reads: list[SyncRead]) -> SliceStats:
    if not reads:
        return SliceStats()
    after: dict[str, datetime] = {}
    for read in reads:  # a swept tag is in two reads: its own watermark is the earlier mark
        for tag, mark in zip(read.tags, read.after):
            after[tag] = min(mark, after.get(tag, mark))
    opens = [partial(client.read_history, r.tags, r.start, r.end) for r in reads]

    def batches() -> Iterator[pa.RecordBatch]:
        with ReadsAhead(opens) as ahead:
            for index in range(len(reads)):
                with ahead.read(index) as part:
                    yield from part

    return append_after(store, after, max(r.end for r in reads), batches())


@dataclass
class _Recount:
    stats: SliceStats = field(default_factory=SliceStats)
    repaired: list[tuple[str, datetime]] = field(default_factory=list)


def _recount(
    client: HistorianClient,
    store: Warehouse,
    tags: list[str],
    since: datetime,
    end: datetime,
    per_read: int,
) -> _Recount:
    """Per tag and quarter hour of [since, end): the historian's count against ClickHouse's;
    each quarter hour that differs is replaced for the tags that differ (late points behind
    a newer one, or a point the historian revised away)."""
    buckets = recount_buckets(since, end, RECOUNT_BUCKET, _EPOCH)
    result = _Recount()
    if not buckets or not tags:
        return result
    with store.connect() as conn:
        stored = counts_by_bucket(
            conn, store.database, tags, buckets[0][0], end, int(RECOUNT_BUCKET.total_seconds())
        )
    for start, stop in buckets:
        differing: list[str] = []
        for first in range(0, len(tags), per_read):
            group = tags[first:first + per_read]
            counted = client.count_points(group, start, stop)
            differing += [t for t in group if counted.get(t, 0) != stored.get((t, start), 0)]
        if differing:
            stats = replace_slice(
                store, differing, start, stop, client.read_history(differing, start, stop)
            )
            result.stats.merge(stats)
            result.repaired += [(t, start) for t in differing]
    return result


def _previous(instance: dg.DagsterInstance, name: str) -> datetime | None:
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


def _limit_to_cached_tags(
    tags_by_chunk: dict[str, list[str]],
    tag_cache: TagCacheResource,
    context: dg.AssetExecutionContext,
) -> dict[str, list[str]]:
    """The Redis tag list rules between catalog refreshes; the catalog gives the chunks."""
    cache = tag_cache.cache(context.log.warning)
    cached = cache.get()
    if cached is None:
        cache.put(sorted(t for tags in tags_by_chunk.values() for t in tags))
        return tags_by_chunk
    wanted = set(cached)
    return {c: [t for t in tags if t in wanted] for c, tags in tags_by_chunk.items()}


def _first_sync_start(
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


def build_sync_job(settings: Settings):  # an unresolved asset job
    """Sync runs carry `ww/sync` (at most one at a time, dagster.yaml) and a time limit
    enforced by run monitoring (WONDERWARE_PIPELINE_SYNC_RUN_TIMEOUT)."""
    return dg.define_asset_job(
        "wonderware_sync_job",
        selection=dg.AssetSelection.assets(SYNC_KEY),
        tags={SYNC_RUN_TAG: "true", "dagster/max_runtime": str(settings.sync_run_timeout_s)},
        description="The incremental sync of wonderware/history_sync.",
    )


def active_sync_run(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running sync run, if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={SYNC_RUN_TAG: "true"}, statuses=ACTIVE_RUN_STATUSES),
        limit=1,
    )
    return runs[0].run_id if runs else None


def _sync_request(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    """A sync run, unless one is already queued or running (whichever trigger asks)."""
    running = active_sync_run(instance)
    if running:
        return dg.SkipReason(f"sync run {running} is still queued or running")
    return dg.RunRequest()


def build_sync_sensor(settings: Settings, sync_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="history_sync_sensor",
        job=sync_job,
        minimum_interval_seconds=settings.sync_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def history_sync_sensor(context: dg.SensorEvaluationContext):
        """Requests a sync run every WONDERWARE_PIPELINE_SYNC_INTERVAL seconds unless one is
        already queued or running."""
        return _sync_request(context.instance)

    return history_sync_sensor


def build_sync_schedule(settings: Settings, sync_job) -> dg.ScheduleDefinition:
    with cron_setting("WONDERWARE_PIPELINE_SYNC_SCHEDULE", settings.sync_schedule) as cron:

        @dg.schedule(
            name="history_sync_schedule",
            job=sync_job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        )
        def history_sync_schedule(context: dg.ScheduleEvaluationContext):
            """The alternative trigger of the sync (WONDERWARE_PIPELINE_SYNC_SCHEDULE); stop
            the sensor when you start this."""
            return _sync_request(context.instance)

    return history_sync_schedule


def refresh_request(
    chunks: list[str], today: date, days: int, oldest: date
) -> dg.RunRequest | None:
    """One range run over every chunk × the `days` complete days before `today`, none
    before `oldest` (the first history partition)."""
    span = complete_days(today, oldest, days)
    if not chunks or span is None:
        return None
    first, last = span
    return dg.RunRequest(
        run_key=f"refresh-{today}",
        tags={
            **range_tags(history_key(chunks[0], first), history_key(chunks[-1], last)),
            "ww/reason": "nightly-refresh",
        },
    )


def build_refresh_schedule(settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="history_refresh_schedule",
        job=history_job,
        cron_schedule="15 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def history_refresh_schedule(context: dg.ScheduleEvaluationContext):
        """After midnight UTC, re-materializes the last WONDERWARE_PIPELINE_REFRESH_DAYS days
        of every chunk, so late points the sync's lookback missed become exact."""
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        today = context.scheduled_execution_time.astimezone(timezone.utc).date()
        request = refresh_request(
            chunks, today, settings.refresh_days, settings.backfill_oldest_time.date()
        )
        if request is None:
            return dg.SkipReason(
                "no tag chunks yet: materialize wonderware/tags" if not chunks else
                "no complete day since WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME yet"
            )  # fmt: skip
        return request

    return history_refresh_schedule


def build_sync_definitions(settings: Settings) -> dg.Definitions:
    sync_job = build_sync_job(settings)
    return dg.Definitions(
        assets=[build_sync_asset(settings)],
        jobs=[sync_job],
        sensors=[build_sync_sensor(settings, sync_job)],
        schedules=[build_sync_schedule(settings, sync_job), build_refresh_schedule(settings)],
    )
