"""What a user does end to end — an emulated plant, its catalog, a backfill from the launcher,
the checks on the asset page, an operator's shutdown — and the assertions on each step."""

from __future__ import annotations

import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets.history_store import chunk_tags
from ww_assets.warehouse import ChdbWarehouse
from ww_assets.wonderware.keys import HISTORY_KEY, TAGS_KEY
from ww_assets_tests.plant_fixtures import stored_points, warehouse_points
from ww_assets_tests.services.dagster_services import DagsterServices
from ww_assets_tests.services.graphql import (
    GraphQL,
    check_names,
    launch_history_backfill,
    partition_check_results,
    partition_stats,
    runs,
    stop_sensor,
    wait_backfill,
    wait_no_active_runs,
)
from ww_assets_tests.services.processes import BIN, service_env


class Stopwatch:
    """Prints how long each phase of an end-to-end test took (shown when the test fails, or
    with `pytest -s`): where the minutes go on a 2-core machine."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.started:6.1f}s  +{now - self.last:5.1f}s] {what}", flush=True)
        self.last = now


HISTORY = list(HISTORY_KEY.path)
SYNC_SENSOR = "history_sync_sensor"
# checks that must be on the asset page once the data-quality checks are in the definitions
KNOWN_CHECKS = {"history_rowcount_matches_source", "history_no_duplicate_keys"}


def ui_env(ww_env: Path, dagster_home: Path, today: date,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The services' environment (also set in this process, so in-process reads agree).

    The sync refreshes only today and yesterday (REFRESH_DAYS=1, short lookbacks): it never
    writes the backfilled days while the backfill runs."""
    overrides = {
        "WW_HOME": str(ww_env),
        "DAGSTER_HOME": str(dagster_home),
        "WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME": str(today - timedelta(days=6)),
        "WONDERWARE_PIPELINE_TAG_CHUNK_SIZE": "4",
        "WONDERWARE_PIPELINE_SYNC_INTERVAL": "30",
        "WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN": "0",
        "WONDERWARE_PIPELINE_SYNC_LOOKBACK": "60",
        "WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK": "60",
        "WONDERWARE_PIPELINE_REFRESH_DAYS": "1",
    }
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    return service_env(overrides)


def create_plant_and_catalog(env: dict[str, str], days: float, tags: int) -> tuple[Settings, list[str]]:
    """An emulated plant (`ww simulate create`) and its tag catalog (the `wonderware/tags`
    materialization a person clicks first), on the instance in DAGSTER_HOME."""
    subprocess.run([str(BIN / "ww"), "simulate", "create", "--days", str(days),
                    "--tags", str(tags)], env=env, check=True, capture_output=True, timeout=120)
    settings = Settings.from_env()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=[TAGS_KEY]).success
        chunks = sorted(instance.get_dynamic_partitions("tag_chunks"))
    return settings, chunks


def history_check_names(settings: Settings) -> set[str]:
    """The checks on wonderware/history in the code location's definitions."""
    graph = build_definitions(settings).resolve_asset_graph()
    return {key.name for key in graph.asset_check_keys if key.asset_key == HISTORY_KEY}


def catalog_tags(settings: Settings, chunks: list[str]) -> list[str]:
    warehouse = ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)
    with warehouse.connect() as conn:
        return sorted(t for chunk in chunks for t in chunk_tags(conn, warehouse.database, chunk))


def assert_rows_exact(settings: Settings, tags: list[str], first: date, last: date) -> int:
    expected = stored_points(settings.historian_sqlite, tags, first, last)
    actual = warehouse_points(ChdbWarehouse(settings.chdb_path, settings.clickhouse_db),
                              tags, first, last)
    assert expected, "the plant has no points on the backfilled days"
    assert len(actual) == len(expected)
    assert actual == expected
    return len(actual)


def assert_checks_passed(graphql: GraphQL, settings: Settings,
                         keys: list[str]) -> dict[str, list[str]]:
    """Every partitioned check of wonderware/history was evaluated on every key, and every
    ERROR (blocking) one passed, as the asset page reads them. Not vacuous: when the
    definitions have checks, the page must list them, partitioned.

    WARN checks only have to be evaluated here. Returns the warnings by check."""
    listed = check_names(graphql, HISTORY)
    defined = history_check_names(settings)
    assert set(listed) == defined
    partitioned = sorted(name for name, is_partitioned in listed.items() if is_partitioned)
    if defined:
        assert partitioned, f"checks {sorted(defined)} are on the page but none is partitioned"
        assert KNOWN_CHECKS & defined <= set(partitioned)
    problems, warnings = [], {}
    for (name, key), execution in partition_check_results(
        graphql, HISTORY, partitioned, keys
    ).items():
        evaluation = (execution or {}).get("evaluation")
        if not evaluation:
            problems.append(f"{name} {key}: never evaluated ({execution})")
        elif not evaluation["success"]:
            if evaluation["severity"] == "ERROR":
                problems.append(f"{name} {key}: {evaluation['description']}")
            else:
                warnings.setdefault(name, []).append(f"{key}: {evaluation['description']}")
    assert not problems, "\n".join(problems)
    return warnings


def backfill_and_verify(ui: DagsterServices, settings: Settings, chunks: list[str],
                        first: date, last: date, clock: Stopwatch) -> list[str]:
    """The user's backfill over first..last × every chunk, from the launcher to the asset
    page (starting the daemon right after the launch, if it is not running): the backfill completes with every run successful, the partition health counts every
    key materialized and none failed, ClickHouse holds exactly the historian's points, and the
    partitioned checks passed. Returns the partition keys."""
    graphql = ui.webserver.graphql
    keys = [f"{c}|{d}" for c in chunks for d in _days(first, last)]
    backfill_id = launch_history_backfill(
        graphql, HISTORY, f"{chunks[0]}|{first}", f"{chunks[-1]}|{last}",
        title=f"e2e: {first}..{last} x all chunks",
    )
    ui.start_daemon()
    clock.lap(f"backfill {backfill_id} launched, daemon up")
    backfill = wait_backfill(graphql, backfill_id, timeout_s=240, alive=ui.check_alive)
    clock.lap(f"backfill {backfill_id} {backfill['status']}")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["numPartitions"] == len(keys)
    assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill

    stats = partition_stats(graphql, HISTORY)
    assert (stats["numMaterialized"], stats["numFailed"]) == (len(keys), 0), stats
    assert_rows_exact(settings, catalog_tags(settings, chunks), first, last)
    warnings = assert_checks_passed(graphql, settings, keys)
    clock.lap(f"rows and checks verified; WARN check results: {warnings}")
    return keys


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def shut_down(ui: DagsterServices, clock: Stopwatch, expected_failures: list[str] | None = None) -> None:
    """An operator's shutdown: the sync sensor off in the UI, queued and running runs
    finished (none of them failed but the `expected_failures` run ids), then Ctrl-C to both
    services, which exit 0 and leave no process behind."""
    stop_sensor(ui.webserver.graphql, SYNC_SENSOR)
    wait_no_active_runs(ui.webserver.graphql, timeout_s=120, alive=ui.check_alive)
    clock.lap("sync sensor stopped, runs finished")
    failed = [r for r in runs(ui.webserver.graphql, statuses=["FAILURE"])
              if r["runId"] not in (expected_failures or [])]
    assert not failed, f"failed runs: {failed}"
    exit_codes = ui.stop()
    clock.lap("services stopped")
    assert exit_codes == {"daemon": 0, "webserver": 0}, (
        exit_codes, *(service.tail() for service in ui.services()))
    leftovers = [p for service in ui.services() for p in service.wait_group_gone()]
    assert not leftovers, f"processes left after shutdown: {leftovers}"
