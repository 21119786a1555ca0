"""Self-healing reconciliation: count per (day, chunk) on both sides, reload what differs.

A scheduled job compares the historian's counts with ClickHouse's for the days at the ages in
WONDERWARE_PIPELINE_RECONCILE_AGES (7: the day a week ago; each day is counted once per age,
a COUNT costing the historian about a read) and records its findings as an observation
of `wonderware/history`; a run-status sensor then requests one run of exactly each partition
that differs, tagged with why.
"""

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.history_store import read_active_tags
from ww_assets.quality_sql import compare_counts
from ww_assets.wonderware.assets import HISTORY_KEY
from ww_assets.wonderware.checks import partition_verdicts
from ww_assets.wonderware.jobs import cron_setting, history_job
from ww_assets.wonderware.partitions import TAG_CHUNKS, complete_days, history_key
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource

REASON_TAG = "ww/reason"
RECONCILE_RUN_TAG = "ww/reconcile_run"
DIFFERING = "differing_partitions"

FINDINGS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("partition", "string"),
        dg.TableColumn("historian_rows", "int"),
        dg.TableColumn("clickhouse_rows", "int"),
        dg.TableColumn("difference", "int"),
        dg.TableColumn("loaded", "bool"),
        dg.TableColumn("verified", "bool"),
    ]
)


def reconcile_days(settings: Settings, today: date) -> list[date]:
    """The complete UTC days to compare: those at the ages in `reconcile_ages` before
    `today`, none before the first history partition; oldest first."""
    oldest = settings.backfill_oldest_time.date()
    days = (today - timedelta(days=age) for age in settings.reconcile_ages)
    return sorted(day for day in days if day >= oldest)


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
        client = historian.client()
        store = warehouse.warehouse()
        tags_by_chunk = read_active_tags(store)
        counts: dict[str, tuple[int, int]] = {}
        differing: list[str] = []
        for chunk in chunks:
            compared = compare_counts(store, client, tags_by_chunk.get(chunk, []), all_days)
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
                **client.load.metadata(),
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


def repair_requests(run_id: str, findings: list[dict[str, object]]) -> list[dg.RunRequest]:
    """One run per differing partition, tagged with the reconciliation that found it."""
    return [
        dg.RunRequest(
            run_key=f"reconcile:{run_id}:{f['partition']}",
            partition_key=str(f["partition"]),
            tags={
                REASON_TAG: "reconcile",
                RECONCILE_RUN_TAG: run_id,
                "ww/historian_rows": str(f["historian_rows"]),
                "ww/clickhouse_rows": str(f["clickhouse_rows"]),
            },
        )
        for f in findings
    ]


def build_reconcile_definitions(settings: Settings) -> dg.Definitions:
    job = build_reconcile_job(settings)
    with cron_setting("WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", settings.reconcile_schedule) as cron:
        schedule = dg.ScheduleDefinition(
            name="wonderware_reconcile_schedule",
            job=job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Nightly reconciliation (WONDERWARE_PIPELINE_RECONCILE_SCHEDULE).",
        )

    @dg.run_status_sensor(
        name="reconcile_repair_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[job],
        request_job=history_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def reconcile_repair_sensor(context: dg.RunStatusSensorContext):  # type: ignore[no-untyped-def]
        """Requests a run of exactly each wonderware/history partition that the finished
        reconciliation found differing (tags `ww/reason=reconcile`, `ww/reconcile_run`)."""
        run_id = context.dagster_run.run_id
        records = context.instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=HISTORY_KEY), limit=20
        ).records
        found = next(
            (r.asset_observation for r in records if r.event_log_entry.run_id == run_id), None
        )
        if found is None or DIFFERING not in found.metadata:
            return dg.SkipReason(f"reconciliation run {run_id} recorded no findings")
        findings = list(found.metadata[DIFFERING].value)  # type: ignore[arg-type]
        if not findings:
            return dg.SkipReason(f"reconciliation run {run_id}: every partition matches")
        context.log.info(
            f"reloading {len(findings)} partitions: {', '.join(str(f['partition']) for f in findings)}"
        )
        return repair_requests(run_id, findings)

    return dg.Definitions(jobs=[job], schedules=[schedule], sensors=[reconcile_repair_sensor])
