"""The job a backfill run executes, rebuilt from the environment in each run and step process
(what `dagster api execute_run` does with the code location)."""

from __future__ import annotations

import dagster as dg

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets.wonderware.jobs import history_job as _history_job


def history_job() -> dg.JobDefinition:
    """`wonderware_history_job` of the code location: the `wonderware/history` asset."""
    return build_definitions(Settings.from_env()).resolve_job_def(_history_job.name)
