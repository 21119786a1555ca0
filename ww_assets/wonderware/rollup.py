"""`wonderware/history_1min`: the 1-minute rollup of a UTC day, gated on the history checks."""

from datetime import date

import dagster as dg

from ww_assets.config import Settings
from ww_assets.quality_sql import ROLLUP_TABLE, replace_rollup_day
from ww_assets.wonderware.assets import HISTORY_KEY
from ww_assets.wonderware.checks import PartitionVerdict, partition_verdicts
from ww_assets.wonderware.partitions import TAG_CHUNKS, daily_partitions, history_key
from ww_assets.wonderware.resources import WarehouseResource

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
