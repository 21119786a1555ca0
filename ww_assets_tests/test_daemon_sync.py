"""End to end: a real dagster-daemon on the workspace runs the sync sensor against a live
emulated plant, and sensor-triggered sync runs land new points."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets.warehouse import ChdbWarehouse
from ww_assets.wonderware.sync import SYNC_RUN_TAG
from ww_assets_tests.conftest import REPO

BIN = Path(sys.executable).parent
DEADLINE_S = 240


def _env(ww_env: Path, dagster_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WONDERWARE_HOST",
                                                            "CLICKHOUSE_HOST")}
    env.update(
        WW_HOME=str(ww_env),
        DAGSTER_HOME=str(dagster_home),
        WONDERWARE_PIPELINE_SYNC_INTERVAL="5",
        WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN="0",
    )
    return env


def _newest_points(instance: dg.DagsterInstance) -> list[str]:
    """`newest_point` of each successful sensor-triggered sync run, oldest run first."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            tags={SYNC_RUN_TAG: "true", "dagster/sensor_name": "history_sync_sensor"},
            statuses=[dg.DagsterRunStatus.SUCCESS],
        )
    )
    newest = []
    for run in reversed(runs):  # get_runs lists the newest first
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        newest.append(records[0].event_log_entry.asset_materialization.metadata["newest_point"].value)
    return newest


def test_daemon_sensor_syncs_a_live_plant(ww_env: Path, tmp_path: Path, monkeypatch) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = _env(ww_env, dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    subprocess.run([BIN / "ww", "simulate", "create", "--days", "0.05", "--tags", "40"],
                   env=env, check=True, capture_output=True, timeout=120)

    settings = Settings.from_env()
    instance = dg.DagsterInstance.get()
    tags_job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    assert tags_job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(["wonderware", "tags"])]
    ).success

    live = subprocess.Popen([BIN / "ww", "simulate", "live", "--seconds", str(DEADLINE_S)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    newest: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(set(newest)) < 3 and time.monotonic() < deadline:
            assert daemon.poll() is None, "dagster-daemon exited"
            time.sleep(2)
            newest = _newest_points(instance)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        live.terminate()
        daemon.wait(timeout=60)
        live.wait(timeout=30)
    # at least two sensor-triggered syncs after the first landed newer points than before
    assert len(set(newest)) >= 3, f"sensor-triggered syncs saw newest points {newest}"
    assert newest == sorted(newest)
    warehouse = ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)
    with warehouse.connect() as conn:
        dupes = conn.query(
            "SELECT count() - uniqExact(TagName, DateTime) AS d FROM wonderware.WonderwareHistory"
        ).column("d")[0].as_py()
    assert dupes == 0
