"""The code location: assembles the wonderware domain's definitions from the environment."""

from __future__ import annotations

import atexit
import gc
import warnings

import dagster as dg

from ww_assets.config import Settings
from ww_assets.plant_days import with_plant_first_day
from ww_assets.wonderware.assets import (
    build_history_asset,
    build_rollup_asset,
    build_sync_asset,
    build_tags_asset,
)
from ww_assets.wonderware.checks import build_history_checks, build_sync_freshness_check
from ww_assets.wonderware.jobs import (
    build_reconcile_job,
    build_rollup_job,
    build_sync_job,
    freshness_check_job,
    history_job,
)
from ww_assets.wonderware.keys import SYNC_FRESH_KEY, history_check_keys
from ww_assets.wonderware.resources import build_resources
from ww_assets.wonderware.schedules import (
    build_reconcile_schedule,
    build_refresh_schedule,
    build_sync_schedule,
)
from ww_assets.wonderware.sensors import (
    build_alert_sensor,
    build_freshness_sensor,
    build_new_tag_history_sensor,
    build_reconcile_repair_sensor,
    build_rollup_sensor,
    build_sync_sensor,
)

# The code location uses Dagster APIs marked beta or preview on purpose (the Dagster minor
# version is pinned): their warnings in every process's log are not the user's to act on.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions(settings: Settings) -> dg.Definitions:
    sync_job = build_sync_job(settings)
    rollup_job = build_rollup_job(settings)
    reconcile_job = build_reconcile_job(settings)
    return dg.Definitions(
        assets=[
            build_tags_asset(settings),
            build_history_asset(settings),
            build_sync_asset(settings),
            build_rollup_asset(settings),
        ],
        asset_checks=[*build_history_checks(settings), build_sync_freshness_check(settings)],
        jobs=[history_job, sync_job, freshness_check_job, rollup_job, reconcile_job],
        sensors=[
            build_new_tag_history_sensor(settings),
            build_sync_sensor(settings, sync_job),
            build_freshness_sensor(settings),
            build_rollup_sensor(rollup_job),
            build_reconcile_repair_sensor(reconcile_job),
            build_alert_sensor(settings, [*history_check_keys(), SYNC_FRESH_KEY]),
        ],
        schedules=[
            build_sync_schedule(settings, sync_job),
            build_refresh_schedule(settings),
            build_reconcile_schedule(settings, reconcile_job),
        ],
        resources=build_resources(settings),
        # One process per run: each extra step process costs ~2 s of start-up here, more
        # than most partitions take; the steps of a run share one historian query at a time.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server / each run worker; reads the environment at
    load time."""
    # A run worker's last act is CPython freeing its objects one by one: with Dagster loaded,
    # 0.3-0.7 s of CPU after the run has succeeded (before the next run of a backfill has its
    # core). Frozen at exit, they are left to the OS; atexit handlers and output flushing
    # still run. Registered here, where Dagster loads the code location, not on import.
    atexit.register(gc.freeze)
    return build_definitions(with_plant_first_day(Settings.from_env()))
