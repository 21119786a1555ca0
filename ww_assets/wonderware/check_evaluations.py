"""The evaluations of the history checks, partition by partition.

The history checks are partitioned like the asset and run in the same run, in one step right
after the partitions they verify; they can also be launched alone for any partition range, and
launched without a partition (the UI's "Execute all") they check every loaded partition.
Dagster 1.13 records a plain `AssetCheckResult` of a range run without a partition, so the
checks emit one `AssetCheckEvaluation` per partition, each pointing at that partition's latest
materialization so that the UI shows it as the partition's current status.

The two WARN checks speak only when there is something to look at: a share of bad values
above their threshold, not the rare excursions every real plant has; their counts are always
in the metadata.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import dagster as dg

# The evaluation's pointer to the materialization it verified has no public constructor in
# 1.13, yet without it the UI treats a partition's check result as outdated.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from ww_assets.history_query import day_bounds
from ww_assets.check_sql import (
    Duplicates,
    QualityReport,
    RangeReport,
    WindowReport,
    count_mismatches,
    eu_range_report,
    quality_report,
    stored_counts,
)
from ww_assets.reconcile_sql import source_counts
from ww_assets.wonderware.keys import (
    BLOCKING_CHECKS,
    EU_RANGE,
    HISTORY_KEY,
    IN_WINDOW,
    NO_DUPLICATES,
    QUALITY,
    ROWCOUNT,
)
from ww_assets.wonderware.partitions import ROWS_READ, only_tags, split_key
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource


@dataclass(frozen=True)
class Limits:
    """Thresholds of the WARN checks."""

    good_min: float
    """Minimum share of good-quality points."""
    eu_outside_max: float
    """Maximum share of analog values outside [MinEU, MaxEU]."""


@dataclass
class _Chunk:
    """The partitions of one tag chunk that a check run covers."""

    chunk: str
    tags: list[str]
    days: dict[date, str] = field(default_factory=dict)
    """Partition key of each day, in day order."""


def _chunks(
    keys: Sequence[str], warehouse: WarehouseResource, only: set[str] | None
) -> list[_Chunk]:
    """The run's chunks; with `only` (a new-tag run), just those tags: the load left the
    others' slices as they were verified before."""
    tags_by_chunk = warehouse.active_tags()
    chunks: dict[str, _Chunk] = {}
    for key in sorted(keys):
        chunk, day = split_key(key)
        tags = [t for t in tags_by_chunk.get(chunk, []) if only is None or t in only]
        chunks.setdefault(chunk, _Chunk(chunk, tags)).days[day] = key
    return list(chunks.values())


def _latest_loads(
    context: dg.AssetCheckExecutionContext, keys: Sequence[str]
) -> dict[str, tuple[AssetCheckEvaluationTargetMaterializationData, dict[str, int] | None]]:
    """Each checked partition's latest materialization, with the rows per tag its load read
    from the historian when that load ran in this run (else None)."""
    ids = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        HISTORY_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, set(keys)
    )
    if not ids:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HISTORY_KEY, storage_ids=list(ids.values())),
        limit=len(ids),
    ).records
    return {
        r.partition_key: (
            AssetCheckEvaluationTargetMaterializationData(
                storage_id=r.storage_id, run_id=r.event_log_entry.run_id, timestamp=r.timestamp
            ),
            _rows_read(r) if r.event_log_entry.run_id == context.run.run_id else None,
        )
        for r in records
        if r.partition_key is not None
    }


def _rows_read(record: dg.EventLogRecord) -> dict[str, int] | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get(ROWS_READ) if materialization else None
    return dict(value.value) if value is not None else None  # type: ignore[arg-type]


def _evaluation(
    target: AssetCheckEvaluationTargetMaterializationData | None,
    name: str,
    partition: str,
    passed: bool,
    metadata: dict[str, object],
    description: str,
) -> dg.AssetCheckEvaluation:
    """One check's result on one partition, pointing at the materialization it verified."""
    blocking = name in BLOCKING_CHECKS
    return dg.AssetCheckEvaluation(
        asset_key=HISTORY_KEY,
        check_name=name,
        passed=passed,
        metadata=metadata,
        target_materialization_data=target,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=description,
        blocking=blocking,
        partition=partition,
    )


def partitions_to_check(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The run's partitions; every loaded partition when the run has none (the UI's
    "Execute all" launches the checks without a partition)."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)  # Dagster enumerates a range anew at each access
    keys = sorted(context.instance.get_materialized_partitions(HISTORY_KEY))
    if keys:
        context.log.info(
            f"no partition selected: checking every loaded partition of "
            f"{HISTORY_KEY.to_user_string()} ({len(keys)})"
        )
    else:
        context.log.warning(
            f"no partition of {HISTORY_KEY.to_user_string()} is loaded yet: nothing to check"
        )
    return keys


def history_evaluations(
    context: dg.AssetCheckExecutionContext,
    keys: list[str],
    selected: set[str],
    historian: HistorianResource,
    warehouse: WarehouseResource,
    limits: Limits,
    reuse_reads: bool,
) -> Iterator[dg.AssetCheckEvaluation]:
    """The selected checks' evaluations of the partitions `keys`, chunk by chunk."""
    if not keys:
        return
    now = datetime.now(timezone.utc)
    loads = _latest_loads(context, keys)
    targets = {key: target for key, (target, _) in loads.items()}
    # What this run's own loads read is the historian's count of their slices: a complete
    # day changes only by late data, which the reconciliation finds (no second pass here).
    read = {key: rows for key, (_, rows) in loads.items() if rows is not None and reuse_reads}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="historian-count")
    try:
        stored: dict[str, dict[date, dict[str, int]]] = {}
        with warehouse.held_session():
            groups = _chunks(keys, warehouse, only_tags(context.run.tags))
            counting = {
                group.chunk: pool.submit(
                    source_counts, historian, group.tags,
                    [d for d, k in group.days.items() if k not in read],
                )  # fmt: skip
                for group in groups
                if ROWCOUNT in selected
            }
            for group in groups:
                summary, dups, windows = warehouse.check_days(
                    group.tags, list(group.days), now,
                    duplicates=NO_DUPLICATES in selected, windows=IN_WINDOW in selected,
                )  # fmt: skip
                quality = quality_report(summary) if QUALITY in selected else {}
                eu = eu_range_report(summary) if EU_RANGE in selected else {}
                stored[group.chunk] = stored_counts(summary)
                for day, key in group.days.items():
                    yield from _content_evaluations(
                        key, day, targets.get(key), limits,
                        dups.get(day), windows.get(day), quality.get(day), eu.get(day),
                    )  # fmt: skip
        # the session is closed: the historian's counts need no ClickHouse
        for group in groups:
            if group.chunk in counting:
                expected = counting[group.chunk].result()
                for day, key in group.days.items():
                    counted = key not in read
                    yield _rowcount_evaluation(
                        key, targets.get(key),
                        expected[day] if counted else {t: read[key].get(t, 0) for t in group.tags},
                        stored[group.chunk][day], "historian COUNT" if counted else "load's read",
                    )  # fmt: skip
    finally:
        pool.shutdown(cancel_futures=True)


def _rowcount_evaluation(
    key: str,
    target: AssetCheckEvaluationTargetMaterializationData | None,
    expected: dict[str, int],
    actual: dict[str, int],
    source: str,
) -> dg.AssetCheckEvaluation:
    want, have = sum(expected.values()), sum(actual.values())
    mismatches = count_mismatches(expected, actual)
    return _evaluation(
        target, ROWCOUNT, key, passed=want == have and not mismatches,
        metadata={
            "expected_rows_historian": want,
            "actual_rows_clickhouse": have,
            "difference": have - want,
            "tags": len(actual),
            "tags_differing": len(mismatches),
            "differing_tags": dg.MetadataValue.json(mismatches[:20]),
            "historian_rows_from": source,
        },
        description=f"historian {want} rows, ClickHouse {have} rows",
    )  # fmt: skip


def _content_evaluations(
    key: str,
    day: date,
    target: AssetCheckEvaluationTargetMaterializationData | None,
    limits: Limits,
    dups: Duplicates | None,
    window: WindowReport | None,
    quality: QualityReport | None,
    eu: RangeReport | None,
) -> Iterator[dg.AssetCheckEvaluation]:
    """One partition's evaluations of the ClickHouse-side checks that ran (a report is given)."""
    if dups is not None:
        yield _evaluation(
            target, NO_DUPLICATES, key, passed=dups.keys == 0,
            metadata={
                "expected_duplicate_keys": 0,
                "actual_duplicate_keys": dups.keys,
                "extra_rows": dups.extra_rows,
                "samples": dg.MetadataValue.json(dups.samples),
            },
            description=f"{dups.keys} duplicated (TagName, DateTime) keys",
        )
    if window is not None:
        start, end = day_bounds(day)
        bad = window.outside_window + window.in_future
        yield _evaluation(
            target, IN_WINDOW, key, passed=bad == 0,
            metadata={
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "expected_rows_outside": 0,
                "actual_rows_outside_window": window.outside_window,
                "actual_rows_in_future": window.in_future,
                "load_id": str(window.load_id or ""),
                "samples": dg.MetadataValue.json(window.samples),
            },
            description=(
                f"{window.outside_window} rows outside the window, {window.in_future} in the future"
            ),
        )
    if quality is not None:
        ratio = quality.ratio
        yield _evaluation(
            target, QUALITY, key, passed=ratio is None or ratio >= limits.good_min,
            metadata={
                "expected_min_good_ratio": limits.good_min,
                "actual_good_ratio": dg.MetadataValue.float(
                    round(ratio, 4) if ratio is not None else 1.0
                ),
                "points": quality.points,
                "good_points": quality.good,
                "not_good_points": quality.points - quality.good,
                "worst_tags": dg.MetadataValue.json(quality.worst),
            },
            description=(
                "no points" if ratio is None
                else f"{quality.good} of {quality.points} points good ({ratio:.1%}; "
                f"warns below {limits.good_min:.0%})"
            ),
        )  # fmt: skip
    if eu is not None:
        share = eu.outside / eu.checked if eu.checked else 0.0
        yield _evaluation(
            target, EU_RANGE, key, passed=share <= limits.eu_outside_max,
            metadata={
                "expected_max_outside_ratio": limits.eu_outside_max,
                "actual_outside_ratio": dg.MetadataValue.float(round(share, 6)),
                "actual_values_outside": eu.outside,
                "values_checked": eu.checked,
                "offenders": dg.MetadataValue.json(eu.offenders),
            },
            description=(
                f"{eu.outside} of {eu.checked} analog values outside [MinEU, MaxEU] "
                f"({share:.3%}; warns above {limits.eu_outside_max:.1%})"
            ),
        )
