"""The asset checks of the wonderware domain: per-partition gates on `wonderware/history`
(`check_evaluations` evaluates them), the freshness of `wonderware/history_sync`."""

from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.gc_frozen import gc_frozen
from ww_assets.wonderware.check_evaluations import (
    Limits,
    history_evaluations,
    partitions_to_check,
)
from ww_assets.wonderware.keys import (
    BLOCKING_CHECKS,
    EU_RANGE,
    HISTORY_KEY,
    IN_WINDOW,
    NO_DUPLICATES,
    QUALITY,
    ROWCOUNT,
    SYNC_FRESH,
    SYNC_KEY,
)
from ww_assets.wonderware.partitions import history_partitions
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource


def build_history_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    partitions_def = history_partitions(settings.backfill_oldest_time)
    limits = Limits(settings.quality_good_min_ratio, settings.eu_outside_max_ratio)

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
        keys = partitions_to_check(context)
        with gc_frozen():
            yield from history_evaluations(
                context, keys, selected, historian, warehouse, limits,
                settings.rowcount_source == "load",
            )
        for spec_ in specs:
            if spec_.name in selected:
                yield dg.Output(None, output_name=spec_.get_python_identifier())

    return [history_checks]


def build_sync_freshness_check(settings: Settings) -> dg.AssetChecksDefinition:
    max_lag = settings.freshness_max_lag_s

    @dg.asset_check(asset=SYNC_KEY, name=SYNC_FRESH)
    def history_sync_lag_within_limit(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        """ERROR. The newest point in `WonderwareHistory` (not dated in the future) is at most
        WONDERWARE_FRESHNESS_MAX_LAG seconds old. Evaluated after every sync run, and by
        `history_sync_freshness_sensor` when the sync has not run for that long."""
        now = datetime.now(timezone.utc)
        newest = warehouse.newest_point(now)
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
