"""`wonderware/history_1min`: the 1-minute rollup of a UTC day, gated on the history checks,
and the sensor that rolls a day up again once its reloaded partitions are verified."""

import json
from datetime import date

import dagster as dg

from ww_assets.config import Settings
from ww_assets.quality_sql import ROLLUP_TABLE, replace_rollup_day
from ww_assets.wonderware.assets import HISTORY_KEY
from ww_assets.wonderware.checks import PartitionVerdict, partition_verdicts
from ww_assets.wonderware.partitions import TAG_CHUNKS, daily_partitions, history_key, split_key
from ww_assets.wonderware.resources import WarehouseResource
from ww_assets.wonderware.sensors import materializations_after

ROLLUP_KEY = dg.AssetKey(["wonderware", "history_1min"])

COVERAGE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("partition", "string"),
        dg.TableColumn("loaded", "bool"),
        dg.TableColumn("verified", "bool"),
        dg.TableColumn("failed_checks", "string"),
        dg.TableColumn("unchecked", "string"),
        dg.TableColumn("warnings", "string"),
    ]
)


def coverage_records(verdicts: list[PartitionVerdict]) -> list[dg.TableRecord]:
    return [
        dg.TableRecord(
            {
                "partition": v.key,
                "loaded": v.loaded,
                "verified": v.verified,
                "failed_checks": ", ".join(v.failed),
                "unchecked": ", ".join(v.unchecked),
                "warnings": ", ".join(v.warnings),
            }
        )
        for v in verdicts
    ]


def gate_message(day: date, verdicts: list[PartitionVerdict]) -> str | None:
    """Why `day` must not be rolled up, or None when every chunk of it is verified."""
    if not verdicts:
        return f"{day}: no tag chunks registered: materialize wonderware/tags first"
    problems = []
    for v in verdicts:
        if not v.loaded:
            problems.append(f"{v.key}: not loaded")
        elif v.failed:
            problems.append(f"{v.key}: failed {', '.join(v.failed)}")
        elif v.unchecked:
            problems.append(f"{v.key}: not verified since its latest load ({', '.join(v.unchecked)})")
    if not problems:
        return None
    return (
        f"{day} is not rolled up: {len(problems)} of {len(verdicts)} wonderware/history "
        "partitions are not verified by their blocking checks; re-materialize them (the checks "
        "run with them):\n" + "\n".join(problems)
    )


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
        stats = replace_rollup_day(warehouse.warehouse(), day)
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


def build_rollup_job(settings: Settings):  # an unresolved asset job
    return dg.define_asset_job(
        "wonderware_rollup_job",
        selection=dg.AssetSelection.assets(ROLLUP_KEY),
        partitions_def=daily_partitions(settings.backfill_oldest_time),
        description="Materializes wonderware/history_1min for one UTC day.",
    )


# History materializations read per tick; more wait for the next tick (the cursor keeps the place).
MATERIALIZATIONS_PER_TICK = 1000


def build_rollup_sensor(rollup_job) -> dg.SensorDefinition:  # type: ignore[no-untyped-def]
    @dg.sensor(
        name="history_rollup_sensor",
        job=rollup_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def history_rollup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Rolls a day up again after any of its wonderware/history partitions is loaded (a
        backfill, the nightly refresh, a reconciliation repair, new tags): once every chunk
        of the day is loaded and passed its blocking checks, one run of wonderware/history_1min
        for that day. A day with a chunk not loaded or a failed check waits for its next load."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        pending: dict[str, int] = cursor.get("pending", {})  # day -> newest load seen
        records = materializations_after(
            context.instance, HISTORY_KEY, cursor.get("after"), MATERIALIZATIONS_PER_TICK
        )
        for record in records:
            if record.partition_key:
                pending[split_key(record.partition_key)[1].isoformat()] = record.storage_id
        after = records[-1].storage_id if records else cursor.get("after")
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        keys = {d: [history_key(c, date.fromisoformat(d)) for c in chunks] for d in pending}
        verdicts = partition_verdicts(context.instance, [k for ks in keys.values() for k in ks])
        requests, waiting, dropped = [], {}, []
        for day, newest in sorted(pending.items()):
            of_day = [verdicts[k] for k in keys[day]]
            if of_day and all(v.verified for v in of_day):
                requests.append(dg.RunRequest(run_key=f"rollup-{day}-{newest}", partition_key=day))
            elif of_day and all(v.loaded and not v.failed for v in of_day):
                waiting[day] = newest  # its checks have not finished yet
            else:
                dropped.append(day)  # its next load brings it back
        if dropped:
            context.log.info(
                f"not rolled up until they are loaded and verified: {', '.join(dropped)}"
            )
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps({"after": after, "pending": waiting}),
            skip_reason=None if requests else (
                f"{len(waiting)} days wait for their checks" if waiting
                else "no day to roll up"
            ),
        )  # fmt: skip

    return history_rollup_sensor
