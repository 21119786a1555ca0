"""Where history partitions stand by their check evaluations in the instance: what gates
the rollup, the reconciliation's findings and `ww status`."""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from ww_assets.wonderware.keys import (
    BLOCKING_CHECKS,
    HISTORY_CHECKS,
    HISTORY_KEY,
    history_check_keys,
)


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
