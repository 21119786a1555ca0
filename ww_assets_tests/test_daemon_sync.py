"""End to end: a real dagster-daemon on the workspace runs the sync sensor against a live
emulated plant, and sensor-triggered sync runs land new points."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dagster as dg

from ww_assets.warehouse import ChdbWarehouse
from ww_assets.wonderware.keys import SYNC_RUN_TAG
from ww_assets_tests.conftest import REPO
from ww_assets_tests.services.dagster_services import dagster_home, start_daemon
from ww_assets_tests.services.processes import BIN, service_env
from ww_assets_tests.services.user_path import create_plant_and_catalog

DEADLINE_S = 240


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
    home = dagster_home(tmp_path / "dagster_home", REPO / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = service_env(
        {
            "WW_HOME": str(ww_env),
            "DAGSTER_HOME": str(home),
            "WONDERWARE_PIPELINE_SYNC_INTERVAL": "5",
            "WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN": "0",
        }
    )
    settings, _ = create_plant_and_catalog(env, days=0.05, tags=40)
    instance = dg.DagsterInstance.get()

    live = subprocess.Popen([BIN / "ww", "simulate", "live", "--seconds", str(DEADLINE_S)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = start_daemon(env, tmp_path / "logs")
    newest: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(set(newest)) < 3 and time.monotonic() < deadline:
            daemon.check_alive()
            time.sleep(2)
            newest = _newest_points(instance)
    finally:
        daemon.stop()
        live.terminate()
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
