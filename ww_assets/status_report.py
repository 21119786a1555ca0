"""The `ww status` document: what landed in ClickHouse, the checks' verdicts, and why a lag.

Read-only: on embedded defaults an empty WW_HOME is reported as empty, with how to start,
without creating a store or a Dagster instance. Each call opens the warehouse for its two
queries and closes it (`ww status --serve` answers every request this way).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ww_assets.config import Settings

START_HINT = "start with `make demo` (or `ww simulate create`, then `ww backfill`)"


def empty_report() -> dict[str, Any]:
    """The document of a warehouse with nothing in it."""
    return {
        "total_tags": 0,
        "total_data_points": 0,
        "oldest_data": None,
        "newest_data": None,
        "data_span_days": None,
        "lag_seconds": None,
        "chunks": [],
    }


def nothing_stored(settings: Settings) -> bool:
    """Embedded defaults and no chDB directory yet: nothing was ever loaded in WW_HOME."""
    return not settings.clickhouse_host and not settings.chdb_path.exists()


def dagster_home(settings: Settings) -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")


def status_report(settings: Settings) -> dict[str, Any]:
    """The `ww status --json` document. Raises what the warehouse raises when unreachable."""
    report = _warehouse_report(settings)
    from ww_assets.historian_meter import HistorianLedger

    report["historian_load"] = HistorianLedger(settings.historian_ledger).summary()
    return report


def _warehouse_report(settings: Settings) -> dict[str, Any]:
    if nothing_stored(settings):
        report = empty_report()
        report["note"] = f"nothing stored in WW_HOME={settings.home} yet: {START_HINT}"
        report["checks"] = empty_checks()
        report["lag_note"] = None
        return report
    from ww_assets.history_store import ensure_schema, status
    from ww_assets.wonderware.resources import initialized_resources

    warehouse = initialized_resources(settings)["warehouse"].warehouse()  # type: ignore[attr-defined]
    with warehouse.connect() as conn:
        ensure_schema(conn, warehouse.database)
        report = status(conn, warehouse.database)
    report["note"] = None if report["total_data_points"] else f"no points loaded yet: {START_HINT}"
    instance = _instance(settings)
    try:
        report["checks"] = empty_checks() if instance is None else _checks(instance)
        report["lag_note"] = lag_note(settings, report, instance)
    finally:
        if instance is not None:
            instance.dispose()
    return report


def empty_checks() -> dict[str, Any]:
    return {
        "partitions_loaded": 0,
        "partitions_verified": 0,
        "partitions_failing": {},
        "partitions_unchecked": [],
        "partitions_with_warnings": {},
    }


def _instance(settings: Settings) -> Any:
    """The Dagster instance in DAGSTER_HOME, None when there is none (nothing is created)."""
    home = dagster_home(settings)
    if not home.is_dir():
        return None
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home.resolve())
    # Without a dagster.yaml the instance says it defaults to the directory: true, and
    # nothing for a reader of the status to act on.
    logger = logging.getLogger("dagster")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return dg.DagsterInstance.get()
    finally:
        logger.setLevel(level)


def _checks(instance: Any) -> dict[str, Any]:
    from ww_assets.wonderware.verdicts import checks_summary

    return checks_summary(instance)


def age(seconds: float) -> str:
    """A duration as a person says it: 45 s, 12 min, 4.1 h, 3.2 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def lag_note(settings: Settings, report: dict[str, Any], instance: Any) -> str | None:
    """Why the newest point is older than WONDERWARE_FRESHNESS_MAX_LAG, if it is."""
    lag = report.get("lag_seconds")
    if lag is None or lag <= settings.freshness_max_lag_s:
        return None
    head = (f"newest point {age(lag)} ago (more than WONDERWARE_FRESHNESS_MAX_LAG="
            f"{settings.freshness_max_lag_s} s)")
    synced = _last_sync(instance)
    if synced is None:
        return (f"{head}: only complete days were backfilled and no sync has run; "
                "`ww backfill` ends with one, and under `make dev` the sync sensor keeps the "
                "data current")
    since = (datetime.now(timezone.utc) - synced).total_seconds()
    if since > settings.freshness_max_lag_s:
        return (f"{head}: the last sync ran {age(since)} ago; is dagster-daemon running "
                "(`make dev`) with history_sync_sensor on?")
    producer = ("" if settings.wonderware_host else
                "; the emulated plant produces points only while `ww simulate live` runs "
                "(`make dev` runs it)")
    return f"{head}: the sync ran {age(since)} ago, the historian has nothing newer{producer}"


def _last_sync(instance: Any) -> datetime | None:
    if instance is None:
        return None
    from ww_assets.wonderware.keys import SYNC_KEY

    event = instance.get_latest_materialization_event(SYNC_KEY)
    return None if event is None else datetime.fromtimestamp(event.timestamp, timezone.utc)
