"""The code location: assembles assets, sensors and resources from the environment."""

from __future__ import annotations

import atexit
import gc
import warnings

import dagster as dg

from ww_assets.config import Settings
from ww_assets.plant_days import with_plant_first_day
from ww_assets.wonderware.assets import build_history_asset, build_tags_asset
from ww_assets.wonderware.jobs import history_job
from ww_assets.wonderware.quality import build_quality_definitions
from ww_assets.wonderware.resources import build_resources
from ww_assets.wonderware.sensors import build_new_tag_history_sensor
from ww_assets.wonderware.sync import build_sync_definitions


def build_definitions(settings: Settings) -> dg.Definitions:
    history = dg.Definitions(
        assets=[build_tags_asset(settings), build_history_asset(settings)],
        jobs=[history_job],
        sensors=[build_new_tag_history_sensor(settings)],
    )
    return dg.Definitions.merge(
        history,
        build_sync_definitions(settings),
        build_quality_definitions(settings),
        # One process per run: each extra step process costs ~2 s of start-up here, more
        # than most partitions take; the steps of a run share one historian query at a time.
        dg.Definitions(resources=build_resources(settings), executor=dg.in_process_executor),
    )


# The code location uses Dagster APIs marked beta or preview on purpose (the Dagster minor
# version is pinned, DESIGN §6): their warnings in every process's log are not the user's to act on.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# A run worker's last act is CPython freeing its objects one by one: with Dagster loaded,
# 0.3-0.7 s of CPU after the run has succeeded (before the next run of a backfill has its
# core). Frozen at exit, they are left to the OS; atexit handlers and output flushing still run.
atexit.register(gc.freeze)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server; reads the environment at load time."""
    return build_definitions(with_plant_first_day(Settings.from_env()))
