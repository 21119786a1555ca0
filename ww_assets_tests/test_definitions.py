"""The code location loads as Dagster and the UI see it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets_tests.conftest import REPO


def test_assets_partitions_resources_and_sensors(ww_env: Path) -> None:
    defs = build_definitions(Settings.from_env())
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert {
        dg.AssetKey(["wonderware", "tags"]),
        dg.AssetKey(["wonderware", "history"]),
        dg.AssetKey(["wonderware", "history_sync"]),
    } <= keys
    history = defs.resolve_assets_def(dg.AssetKey(["wonderware", "history"]))
    partitions = history.partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in partitions.partitions_defs}
    assert isinstance(dims["date"], dg.DailyPartitionsDefinition)
    assert dims["date"].start.strftime("%Y-%m-%d") == "2025-10-01"
    assert dims["date"].timezone == "UTC"
    assert isinstance(dims["chunk"], dg.DynamicPartitionsDefinition)
    assert dims["chunk"].name == "tag_chunks"
    assert history.backfill_policy == dg.BackfillPolicy.multi_run(31)
    assert set(defs.resources) == {"historian", "warehouse", "tag_cache"}
    for key, pool in [("tags", "historian"), ("history", "historian"),
                      ("history_sync", "historian_sync")]:
        assert defs.resolve_assets_def(dg.AssetKey(["wonderware", key])).op.pool == pool
    assert defs.resolve_sensor_def("new_tag_history_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    assert defs.resolve_job_def("wonderware_history_job")
    assert defs.resolve_sensor_def("history_sync_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    assert defs.resolve_schedule_def("history_sync_schedule").default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )


# Everything the code location defines, by name, written out by hand: a definition added,
# renamed or dropped must show up here.
ASSETS = {"wonderware/tags", "wonderware/history", "wonderware/history_sync",
          "wonderware/history_1min"}
CHECKS = {
    ("wonderware/history", "history_no_duplicate_keys"),
    ("wonderware/history", "history_quality_good_ratio"),
    ("wonderware/history", "history_rowcount_matches_source"),
    ("wonderware/history", "history_timestamps_in_window"),
    ("wonderware/history", "history_values_within_eu_range"),
    ("wonderware/history_sync", "history_sync_lag_within_limit"),
}
SENSORS = {  # every sensor starts running with the code location
    "new_tag_history_sensor", "history_sync_sensor", "history_sync_freshness_sensor",
    "wonderware_failure_alert_sensor", "history_rollup_sensor", "reconcile_repair_sensor",
}
SCHEDULES = {  # name: (cron, runs by default)
    "history_sync_schedule": ("*/1 * * * *", False),  # the alternative to the sync sensor
    "history_refresh_schedule": ("15 0 * * *", True),
    "wonderware_reconcile_schedule": ("30 1 * * *", True),
}
JOBS = {"wonderware_history_job", "wonderware_sync_job", "wonderware_reconcile_job",
        "wonderware_rollup_job", "wonderware_freshness_check_job"}


def test_every_asset_check_sensor_schedule_and_job_by_name(ww_env: Path) -> None:
    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    assert {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()} == ASSETS
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == CHECKS
    sensors = {s.name: s.default_status for s in defs.sensors or []}
    assert sensors == dict.fromkeys(SENSORS, dg.DefaultSensorStatus.RUNNING)
    schedules = {
        s.name: (s.cron_schedule, s.default_status == dg.DefaultScheduleStatus.RUNNING)
        for s in defs.schedules or []
    }
    assert schedules == SCHEDULES
    jobs = {j.name for j in defs.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert jobs == JOBS


def test_bad_knob_fails_at_load_naming_the_variable(
    ww_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", "ten")
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "WONDERWARE_PIPELINE_TAG_CHUNK_SIZE" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "name, value",
    [
        ("WONDERWARE_PIPELINE_SYNC_SCHEDULE", "a b c d e"),
        ("WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", "61 1 * * *"),
        ("WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", "0 0 30 2 *"),
    ],
)
def test_a_cron_dagster_rejects_names_its_variable(name: str, value: str) -> None:
    """Five fields that are not a schedule: the code location fails to load naming the
    variable, not the schedule built from it."""
    from ww_assets.config import ConfigError, Settings
    from ww_assets.definitions import build_definitions

    with pytest.raises(ConfigError, match=name):
        build_definitions(Settings.from_env({name: value}))


def test_dagster_definitions_validate_passes(ww_env: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


_CYCLE_AT_EXIT = """
import gc, sys
gc.disable()  # the interpreter's exit still collects; only the exit may free the cycle
class Cycle:
    def __del__(self):
        sys.stdout.write("freed at exit")
cycle = Cycle()
cycle.itself = cycle
del cycle
"""


@pytest.mark.parametrize(
    ("prelude", "at_exit"),
    [
        ("", "freed at exit"),
        # importing the module (tests, the CLI) changes nothing at exit
        ("import ww_assets.definitions\n", "freed at exit"),
        # Dagster loading the code location calls `defs` (each run worker does)
        ("import ww_assets.definitions\nww_assets.definitions.defs()\n", ""),
    ],
)
def test_a_process_that_loads_the_code_location_leaves_its_objects_to_the_os_at_exit(
    ww_env: Path, prelude: str, at_exit: str
) -> None:
    """A run worker's interpreter would spend 0.3-0.7 s freeing Dagster's objects after its run
    succeeded; once Dagster has loaded the code location, what is alive at exit is left to the
    OS. Importing the module alone has no such effect."""
    result = subprocess.run(
        [sys.executable, "-c", prelude + _CYCLE_AT_EXIT], cwd=REPO, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == at_exit


def test_instance_bounds_runs_pools_and_sync_overlap() -> None:
    import yaml

    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    assert {"key": "ww/sync", "limit": 1} in config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert config["run_retries"]["enabled"] and not config["run_retries"]["retry_on_asset_or_op_failure"]
    assert config["run_monitoring"]["max_runtime_seconds"] == 86400


def test_secrets_reach_the_resources_as_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The UI shows a resource's configuration: passwords and the Redis URL (which may hold
    one) are env-var references there, resolved only when a run uses them."""
    from ww_assets.config import Settings
    from ww_assets.wonderware.resources import build_resources

    secrets = {"WONDERWARE_HOST": "sql.plant", "WONDERWARE_PASSWORD": "s3cret-sql",
               "CLICKHOUSE_PASSWORD": "s3cret-ch", "REDIS_URL": "redis://:s3cret-redis@cache:6379/0"}  # fmt: skip
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(Settings.from_env())
    shown = {
        "historian": resources["historian"].password,
        "warehouse": resources["warehouse"].password,
        "tag_cache": resources["tag_cache"].url,
    }
    assert shown == {"historian": dg.EnvVar("WONDERWARE_PASSWORD"),
                     "warehouse": dg.EnvVar("CLICKHOUSE_PASSWORD"),
                     "tag_cache": dg.EnvVar("REDIS_URL")}  # fmt: skip
    assert all(isinstance(v, dg.EnvVar) for v in shown.values())
    with dg.build_resources({"tag_cache": resources["tag_cache"]}) as built:
        assert built.tag_cache.url == secrets["REDIS_URL"]
