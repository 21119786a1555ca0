"""Asset checks: per-partition gates on `wonderware/history`, freshness of `wonderware/history_sync`.

The history checks are partitioned like the asset and run in the same run, in one step right
after the partitions they verify; they can also be launched alone for any partition range, and
launched without a partition (the UI's "Execute all") they check every loaded partition.
Dagster 1.13 records a plain `AssetCheckResult` of a range run without a partition (DESIGN §6),
so the checks emit one `AssetCheckEvaluation` per partition, each pointing at that partition's
latest materialization so that the UI shows it as the partition's current status.

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

from ww_assets.config import Settings
from ww_assets.gc_frozen import gc_frozen
from ww_assets.historian import HistorianClient
from ww_assets.history_store import ensure_schema, read_active_tags
from ww_assets.history_query import day_bounds
from ww_assets.quality_sql import (
    Duplicates,
    QualityReport,
    RangeReport,
    WindowReport,
    count_mismatches,
    duplicate_keys,
    eu_range_report,
    newest_point,
    quality_report,
    source_counts,
    stored_counts,
    summarize,
    window_report,
)
from ww_assets.warehouse import HeldSessions, Warehouse
from ww_assets.wonderware.assets import HISTORY_KEY
from ww_assets.wonderware.partitions import ROWS_READ, history_partitions, only_tags, split_key
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource
from ww_assets.wonderware.sync import SYNC_KEY

ROWCOUNT = "history_rowcount_matches_source"
NO_DUPLICATES = "history_no_duplicate_keys"
IN_WINDOW = "history_timestamps_in_window"
QUALITY = "history_quality_good_ratio"
EU_RANGE = "history_values_within_eu_range"
SYNC_FRESH = "history_sync_lag_within_limit"

BLOCKING_CHECKS = (ROWCOUNT, NO_DUPLICATES, IN_WINDOW)
"""Checks whose failure keeps a day out of the rollup."""
HISTORY_CHECKS = (ROWCOUNT, NO_DUPLICATES, IN_WINDOW, QUALITY, EU_RANGE)

SYNC_FRESH_KEY = dg.AssetCheckKey(SYNC_KEY, SYNC_FRESH)


def history_check_keys() -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(HISTORY_KEY, name) for name in HISTORY_CHECKS]


@dataclass
class _Chunk:
    """The partitions of one tag chunk that a check run covers."""

    chunk: str
    tags: list[str]
    days: dict[date, str] = field(default_factory=dict)
    """Partition key of each day, in day order."""


def _chunks(keys: Sequence[str], store: Warehouse, only: set[str] | None) -> list[_Chunk]:
    """The run's chunks; with `only` (a new-tag run), just those tags: the load left the
    others' slices as they were verified before."""
    tags_by_chunk = read_active_tags(store)
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


def build_history_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    partitions_def = history_partitions(settings.backfill_oldest_time)
    limits = _Limits(settings.quality_good_min_ratio, settings.eu_outside_max_ratio)

    def spec(name: str, description: str) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name=name,
            asset=HISTORY_KEY,
            description=description,
            blocking=name in BLOCKING_CHECKS,
            partitions_def=partitions_def,
        )

    specs = [
        spec(
            ROWCOUNT,
            "Blocking (ERROR). The rows in ClickHouse for the partition's slice (its chunk's "
            "active tags in [day, day + 1) UTC, as a plain SELECT sees them) equal the "
            "historian's count of the same slice: the rows the historian returned to the load "
            "when the load ran in the same run (WONDERWARE_PIPELINE_ROWCOUNT_SOURCE=load), "
            "else one COUNT query in the `historian` pool. Metadata: both numbers, where the "
            "historian's came from, and the tags that differ.",
        ),
        spec(
            NO_DUPLICATES,
            "Blocking (ERROR). No two rows of the slice share (TagName, DateTime) as a plain "
            "SELECT (no FINAL) sees them.",
        ),
        spec(
            IN_WINDOW,
            "Blocking (ERROR). Every row the partition's load wrote lies inside the "
            "partition's day, and no row of the slice is dated in the future (after now, or "
            "after the moment it was loaded).",
        ),
        spec(
            QUALITY,
            f"WARN. At least {limits.good_min:.0%} of the slice's points have good quality "
            "(`Quality = 0`; WONDERWARE_QUALITY_GOOD_MIN_RATIO). Metadata: the counts and the "
            "worst tags.",
        ),
        spec(
            EU_RANGE,
            f"WARN. At most {limits.eu_outside_max:.1%} of the slice's analog values lie "
            "outside [MinEU, MaxEU] of their tag (`AnalogTag`; "
            "WONDERWARE_QUALITY_EU_OUTSIDE_MAX_RATIO). Metadata: the counts and the offending "
            "tags with their min/max and EU range.",
        ),
    ]

    @dg.multi_asset_check(name="history_checks", specs=specs, can_subset=True, pool="historian")
    def history_checks(
        context: dg.AssetCheckExecutionContext,
        historian: HistorianResource,
        warehouse: WarehouseResource,
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        """The five history checks of every partition in the run (of every loaded partition
        when the run has none). Per tag chunk, one ClickHouse scan of its days answers all but
        the source count; the historian's `COUNT`s (one at a time) run in a thread meanwhile,
        and their results come last."""
        selected = {k.name for k in context.selected_asset_check_keys}
        keys = _partitions_to_check(context)
        with gc_frozen():
            yield from _history_evaluations(
                context, keys, selected, historian.client(), warehouse.warehouse(), limits,
                settings.rowcount_source == "load",
            )
        for spec_ in specs:
            if spec_.name in selected:
                yield dg.Output(None, output_name=spec_.get_python_identifier())

    return [history_checks]


@dataclass(frozen=True)
class _Limits:
    """Thresholds of the WARN checks."""

    good_min: float
    """Minimum share of good-quality points."""
    eu_outside_max: float
    """Maximum share of analog values outside [MinEU, MaxEU]."""


def _partitions_to_check(context: dg.AssetCheckExecutionContext) -> list[str]:
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


def _history_evaluations(
    context: dg.AssetCheckExecutionContext,
    keys: list[str],
    selected: set[str],
    client: HistorianClient,
    warehouse: Warehouse,
    limits: _Limits,
    reuse_reads: bool,
) -> Iterator[dg.AssetCheckEvaluation]:
    """The selected checks' evaluations of the partitions `keys`, chunk by chunk."""
    if not keys:
        return
    store = HeldSessions(warehouse)
    now = datetime.now(timezone.utc)
    loads = _latest_loads(context, keys)
    targets = {key: target for key, (target, _) in loads.items()}
    # What this run's own loads read is the historian's count of their slices: a complete
    # day changes only by late data, which the reconciliation finds (no second pass here).
    read = {key: rows for key, (_, rows) in loads.items() if rows is not None and reuse_reads}
    groups = _chunks(keys, store, only_tags(context.run.tags))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="historian-count")
    try:
        counting = {
            group.chunk: pool.submit(
                source_counts, client, group.tags, [d for d, k in group.days.items() if k not in read]
            )
            for group in groups
            if ROWCOUNT in selected
        }
        stored: dict[str, dict[date, dict[str, int]]] = {}
        for group in groups:
            with store.connect() as conn:
                summary = summarize(conn, store.database, group.tags, list(group.days), now)
                db = store.database
                dups = duplicate_keys(conn, db, summary) if NO_DUPLICATES in selected else {}
                windows = window_report(conn, db, summary) if IN_WINDOW in selected else {}
            quality = quality_report(summary) if QUALITY in selected else {}
            eu = eu_range_report(summary) if EU_RANGE in selected else {}
            stored[group.chunk] = stored_counts(summary)
            for day, key in group.days.items():
                yield from _content_evaluations(
                    key, day, targets.get(key), limits,
                    dups.get(day), windows.get(day), quality.get(day), eu.get(day),
                )  # fmt: skip
        store.close()  # the historian's counts need no ClickHouse
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
        store.close()
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
    limits: _Limits,
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


def build_sync_freshness_check(settings: Settings) -> dg.AssetChecksDefinition:
    max_lag = settings.freshness_max_lag_s

    @dg.asset_check(asset=SYNC_KEY, name=SYNC_FRESH)
    def history_sync_lag_within_limit(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        """ERROR. The newest point in `WonderwareHistory` (not dated in the future) is at most
        WONDERWARE_FRESHNESS_MAX_LAG seconds old. Evaluated after every sync run, and by
        `history_sync_freshness_sensor` when the sync has not run for that long."""
        store = warehouse.warehouse()
        now = datetime.now(timezone.utc)
        with store.connect() as conn:
            ensure_schema(conn, store.database)
            newest = newest_point(conn, store.database, now)
        lag = (now - newest).total_seconds() if newest else None
        return dg.AssetCheckResult(
            passed=lag is not None and lag <= max_lag,
            metadata={
                "expected_max_lag_seconds": max_lag,
                "actual_lag_seconds": dg.MetadataValue.float(
                    round(lag, 1) if lag is not None else -1.0
                ),
                "newest_point": newest.isoformat() if newest else "",
            },
            description=(
                "no points in ClickHouse" if lag is None
                else f"lag {lag:.0f} s (limit {max_lag} s)"
            ),
        )

    return history_sync_lag_within_limit


@dataclass(frozen=True)
class PartitionVerdict:
    """Where one history partition stands, from the check evaluations in the instance."""

    key: str
    loaded: bool
    verified: bool
    """Every blocking check passed on the partition's latest materialization."""
    failed: list[str]
    """Blocking checks that failed on the latest materialization."""
    unchecked: list[str]
    """Blocking checks not (yet) evaluated on the latest materialization."""
    warnings: list[str]
    """WARN checks that failed on the latest materialization."""


def partition_verdicts(
    instance: dg.DagsterInstance, keys: Sequence[str], loaded: set[str] | None = None
) -> dict[str, PartitionVerdict]:
    """The verdict of each history partition in `keys` (`loaded`: the materialized
    partitions, if the caller has them already)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        history_check_keys(), partition_keys=keys
    )
    current = {
        (info.check_key.name, info.partition_key): info.latest_execution_status.value
        for info in infos
        if info.is_current
    }
    if loaded is None:
        loaded = set(instance.get_materialized_partitions(HISTORY_KEY))
    verdicts = {}
    for key in keys:
        status = {name: current.get((name, key)) for name in HISTORY_CHECKS}
        failed = [n for n in BLOCKING_CHECKS if status[n] == "FAILED"]
        unchecked = [n for n in BLOCKING_CHECKS if status[n] not in ("FAILED", "SUCCEEDED")]
        verdicts[key] = PartitionVerdict(
            key=key,
            loaded=key in loaded,
            verified=key in loaded and not failed and not unchecked,
            failed=failed,
            unchecked=unchecked,
            warnings=[n for n in HISTORY_CHECKS if n not in BLOCKING_CHECKS and status[n] == "FAILED"],
        )
    return verdicts


def checks_summary(instance: dg.DagsterInstance) -> dict[str, object]:
    """`ww status`'s checks section: loaded partitions that are verified and that fail."""
    loaded = set(instance.get_materialized_partitions(HISTORY_KEY))
    verdicts = partition_verdicts(instance, loaded, loaded)
    return {
        "partitions_loaded": len(verdicts),
        "partitions_verified": sum(1 for v in verdicts.values() if v.verified),
        "partitions_failing": {k: v.failed for k, v in verdicts.items() if v.failed},
        "partitions_unchecked": sorted(k for k, v in verdicts.items() if v.unchecked and not v.failed),
        "partitions_with_warnings": {k: v.warnings for k, v in verdicts.items() if v.warnings},
    }
