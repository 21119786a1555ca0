"""The jobs of the wonderware domain."""

from datetime import datetime, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.reconcile_sql import side_by_side, source_counts
from ww_assets.wonderware.keys import (
    HISTORY_KEY,
    REASON_TAG,
    ROLLUP_KEY,
    SYNC_FRESH_KEY,
    SYNC_KEY,
    SYNC_RUN_TAG,
)
from ww_assets.wonderware.partitions import TAG_CHUNKS, daily_partitions, history_key
from ww_assets.wonderware.reconciliation import DIFFERING, FINDINGS_SCHEMA, reconcile_days
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource
from ww_assets.wonderware.verdicts import partition_verdicts

history_job = dg.define_asset_job(
    "wonderware_history_job",
    selection=dg.AssetSelection.assets(HISTORY_KEY),
    description="Materializes wonderware/history partitions (day × tag chunk).",
)


def build_sync_job(settings: Settings):  # an unresolved asset job
    """Sync runs carry `ww/sync` (at most one at a time, dagster.yaml) and a time limit
    enforced by run monitoring (WONDERWARE_PIPELINE_SYNC_RUN_TIMEOUT)."""
    return dg.define_asset_job(
        "wonderware_sync_job",
        selection=dg.AssetSelection.assets(SYNC_KEY),
        tags={SYNC_RUN_TAG: "true", "dagster/max_runtime": str(settings.sync_run_timeout_s)},
        description="The incremental sync of wonderware/history_sync.",
    )


freshness_check_job = dg.define_asset_job(
    "wonderware_freshness_check_job",
    selection=dg.AssetSelection.checks(SYNC_FRESH_KEY),
    description="Evaluates the freshness of wonderware/history_sync on its own.",
    tags={REASON_TAG: "freshness"},
)


def build_rollup_job(settings: Settings):  # an unresolved asset job
    return dg.define_asset_job(
        "wonderware_rollup_job",
        selection=dg.AssetSelection.assets(ROLLUP_KEY),
        partitions_def=daily_partitions(settings.backfill_oldest_time),
        description="Materializes wonderware/history_1min for one UTC day.",
    )


def build_reconcile_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(pool="historian", out=dg.Out(list[str]))
    def reconcile_history_counts(
        context: dg.OpExecutionContext,
        historian: HistorianResource,
        warehouse: WarehouseResource,
    ):  # type: ignore[no-untyped-def]
        """Counts every (day, chunk) of the days at the configured ages in the historian and
        in ClickHouse; outputs the history partitions whose counts differ."""
        all_days = reconcile_days(settings, datetime.now(timezone.utc).date())
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        if not all_days or not chunks:
            context.log.info("nothing to reconcile: no day of those ages or no tag chunk yet")
            yield dg.Output([])
            return
        first, last = all_days[0], all_days[-1]
        with historian.metered() as load:
            tags_by_chunk = warehouse.active_tags()
            counts: dict[str, tuple[int, int]] = {}
            differing: list[str] = []
            for chunk in chunks:
                tags = tags_by_chunk.get(chunk, [])
                # ClickHouse first, in a session of its own: not held while the historian counts
                stored = warehouse.counts_by_day_and_tag(tags, first, last)
                counted = source_counts(historian, tags, all_days)
                compared = side_by_side(counted, stored, tags, all_days)
                for day, (expected, actual) in compared.items():
                    key = history_key(chunk, day)
                    counts[key] = (sum(expected.values()), sum(actual.values()))
                    # per tag: one tag's extra point must not hide another's missing one
                    if expected != actual:
                        differing.append(key)
        verdicts = partition_verdicts(context.instance, list(counts))
        differing.sort()
        for key in differing:
            want, have = counts[key]
            also = "" if want != have else " (the same in all; per tag they differ)"
            context.log.warning(f"{key}: historian {want} rows, ClickHouse {have}{also}: reloading")
        records = [
            dg.TableRecord(
                {
                    "partition": key,
                    "historian_rows": want,
                    "clickhouse_rows": have,
                    "difference": have - want,
                    "loaded": verdicts[key].loaded,
                    "verified": verdicts[key].verified,
                }
            )
            for key, (want, have) in sorted(counts.items(), key=lambda kv: kv[0].split("|")[::-1])
        ]
        yield dg.AssetObservation(
            asset_key=HISTORY_KEY,
            description=f"reconciliation of {', '.join(map(str, all_days))}: "
            f"{len(differing)} partitions differ",
            metadata={
                "first_day": first.isoformat(),
                "last_day": last.isoformat(),
                "days": dg.MetadataValue.json([d.isoformat() for d in all_days]),
                "partitions_compared": len(counts),
                "partitions_differing": len(differing),
                "partitions_verified": sum(1 for v in verdicts.values() if v.verified),
                DIFFERING: dg.MetadataValue.json(
                    [
                        {"partition": k, "historian_rows": counts[k][0], "clickhouse_rows": counts[k][1]}
                        for k in differing
                    ]
                ),
                "coverage": dg.MetadataValue.table(records, FINDINGS_SCHEMA),
                **load.metadata(),
            },
        )
        yield dg.Output(differing)

    @dg.job(
        name="wonderware_reconcile_job",
        description="Compares per (day, chunk) row counts between the historian and ClickHouse "
        "for the days at the ages in WONDERWARE_PIPELINE_RECONCILE_AGES; "
        "`reconcile_repair_sensor` reloads the partitions that differ.",
        tags={REASON_TAG: "reconcile"},
    )
    def wonderware_reconcile_job() -> None:
        reconcile_history_counts()

    return wonderware_reconcile_job
