"""End to end, as a person uses the Dagster UI: dagster-webserver and dagster-daemon on
workspace.yaml with dagster.yaml (a temporary DAGSTER_HOME, embedded defaults).

The backfill is launched with the GraphQL mutation the UI's launcher sends
(`launchPartitionBackfill` with a `partitionsByAssets` range over 2 days × every tag chunk), the
rows are compared with the historian's stored points, the partition health and every
partitioned check result are read back through GraphQL as the asset page reads them; the
checks tab's "Execute all" (a run of the checks without a partition) verifies every loaded
partition, and turns the source count of a partition whose rows were deleted in ClickHouse red;
then that partition is reloaded with `dagster asset materialize`, the sync sensor is seen
producing runs and is switched off in the UI, and both services stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets.config import Settings
from ww_assets.history_query import day_bounds, naive_utc
from ww_assets.history_store import HISTORY_STORE, HISTORY_TABLE
from ww_assets.warehouse import ChdbWarehouse
from ww_assets_tests.conftest import REPO
from ww_assets_tests.services import graphql as ui_graphql
from ww_assets_tests.services.dagster_services import dagster_home, dagster_services
from ww_assets_tests.services.processes import BIN, wait_for
from ww_assets_tests.services.user_path import (
    HISTORY,
    SYNC_SENSOR,
    Stopwatch,
    assert_rows_exact,
    backfill_and_verify,
    catalog_tags,
    create_plant_and_catalog,
    shut_down,
    ui_env,
)


def test_ui_backfill_cli_partition_and_sync_sensor(
    ww_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Stopwatch()
    today = datetime.now(timezone.utc).date()
    # two complete days, clear of what the sync touches (today and yesterday)
    first, last = today - timedelta(days=3), today - timedelta(days=2)
    home = dagster_home(tmp_path / "dagster_home", REPO / "dagster.yaml")
    env = ui_env(ww_env, home, today, monkeypatch)
    settings, chunks = create_plant_and_catalog(env, days=3, tags=8)
    assert chunks == ["chunk-0001", "chunk-0002"]
    tags = catalog_tags(settings, chunks)
    clock.lap("plant and tag catalog")

    with dagster_services(env, tmp_path / "logs") as ui:
        clock.lap("webserver up")
        graphql = ui.webserver.graphql
        keys = backfill_and_verify(ui, settings, chunks, first, last, clock)
        rows = assert_rows_exact(settings, tags, first, last)
        names = sorted(ui_graphql.check_names(graphql, HISTORY))

        # the checks tab's "Execute all": every loaded partition checked, all green
        healthy = execute_all_checks(graphql, HISTORY, alive=ui.check_alive)
        assert healthy["status"] == "SUCCESS", healthy
        latest = ui_graphql.partition_check_results(graphql, HISTORY, names, keys)
        assert {k: (e or {}).get("runId") for k, e in latest.items()} == dict.fromkeys(
            latest, healthy["runId"])
        assert all(e and e["evaluation"]["success"] for e in latest.values()), latest
        clock.lap("Execute all: every partition's checks passed")

        # the rollup sensor rolls up both verified days by itself; waiting for it also keeps the
        # corruption below from landing under a rollup already requested (its gate would fail it)
        def rolled_up_days() -> set[str]:
            done = ui_graphql.runs(graphql, {"dagster/sensor_name": ROLLUP_SENSOR}, ["SUCCESS"])
            return {t["value"] for r in done for t in r["tags"] if t["key"] == "dagster/partition"}

        wait_for("the rollup sensor's runs of both backfilled days",
                 lambda: rolled_up_days() >= {str(first), str(last)},
                 timeout_s=300, interval_s=2, alive=ui.check_alive)
        clock.lap("rollup sensor: both days rolled up")

        # quiet must not mean blind: rows deleted in ClickHouse turn that partition's count red
        reload_key = f"{chunks[-1]}|{first}"
        delete_one_tag_day(settings, catalog_tags(settings, [chunks[-1]])[0], first)
        corrupted = execute_all_checks(graphql, HISTORY, alive=ui.check_alive)
        assert corrupted["status"] == "FAILURE", corrupted  # a blocking check failed
        rowcount = ui_graphql.partition_check_results(
            graphql, HISTORY, ["history_rowcount_matches_source"], keys)
        assert {k for (_, k), e in rowcount.items() if not e["evaluation"]["success"]} == {reload_key}
        clock.lap("Execute all after corruption: exactly that partition's count failed")

        # reload that day of that chunk from the command line
        cli = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "ww_assets.definitions",
             "--select", "wonderware/history", "--partition", reload_key],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )
        assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
        assert len(ui_graphql.partition_materializations(graphql, HISTORY, reload_key)) == 2
        assert assert_rows_exact(settings, tags, first, last) == rows
        assert ui_graphql.partition_stats(graphql, HISTORY)["numFailed"] == 0
        again = ui_graphql.partition_check_results(graphql, HISTORY, names, [reload_key])
        assert all(e and e["evaluation"]["success"] for e in again.values()), again
        clock.lap("dagster asset materialize done")

        # the sync sensor (running by default) produces sync runs that succeed
        wait_for(
            "a successful run of the sync sensor",
            lambda: ui_graphql.runs(graphql, {"dagster/sensor_name": SYNC_SENSOR}, ["SUCCESS"]),
            timeout_s=180, interval_s=2, alive=ui.check_alive,
        )
        clock.lap("sync sensor run succeeded")
        shut_down(ui, clock, expected_failures=[corrupted["runId"]])


ROLLUP_SENSOR = "history_rollup_sensor"

CHECK_LAUNCHER = """
query CheckLauncher($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      jobNames
      repository { name location { name } }
      assetChecksOrError {
        ... on AssetChecks { checks { name canExecuteIndividually jobNames } }
      }
    }
  }
}
"""

LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

RUN_STATUS = """
query Run($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { runId status } }
}
"""


def execute_all_checks(graphql: ui_graphql.GraphQL, path: list[str],
                       alive: Callable[[], None]) -> dict[str, str]:
    """What the checks tab's "Execute all" button sends (Dagster 1.13's ExecuteChecksButton:
    the checks that can run alone, in their common job, no partition), then the run's end."""
    node = graphql(CHECK_LAUNCHER, {"path": path})["assetNodeOrError"]
    checks = node["assetChecksOrError"]["checks"]
    launchable = [c for c in checks if c["canExecuteIndividually"] == "CAN_EXECUTE"]
    assert launchable, checks
    common = [j for j in checks[0]["jobNames"] if all(j in c["jobNames"] for c in checks)]
    launched = graphql(LAUNCH_RUN, {"executionParams": {
        "mode": "default", "executionMetadata": {}, "runConfigData": "{}",
        "selector": {
            "jobName": (common or node["jobNames"])[0],
            "repositoryLocationName": node["repository"]["location"]["name"],
            "repositoryName": node["repository"]["name"],
            "assetSelection": [],
            "assetCheckSelection": [{"assetKey": {"path": path}, "name": c["name"]}
                                    for c in launchable],
        },
    }})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def ended() -> dict[str, str] | None:
        run = graphql(RUN_STATUS, {"id": run_id})["runOrError"]
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    return wait_for(f"check run {run_id}", ended, timeout_s=180, interval_s=1,
                             alive=alive)


def delete_one_tag_day(settings: Settings, tag: str, day: date) -> None:
    """Rows lost in ClickHouse: one tag's points of one day deleted behind the pipeline."""
    warehouse = ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)
    with warehouse.connect() as conn:
        conn.command(
            f"DELETE FROM {warehouse.database}.{HISTORY_STORE} WHERE TagName = {{t:String}} "
            "AND toDate(DateTime) = {d:Date}",
            {"t": tag, "d": day},
        )


ARTIFACTS = REPO / ".ww" / "artifacts" / "e2e-browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.mark.browser
def test_browser_walks_what_a_newcomer_sees(
    ww_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless Chromium (Debian's, driven by Playwright without a browser download of its
    own) walks what a newcomer looks at after the launcher's range backfill and a sync: the
    asset graph, the history partitions, one partition's metadata, the checks tab and the
    sync's events with its lag. It asserts what a person would judge: no failed check or failed node on
    the healthy plant, and the partition's rows are ClickHouse's count of its slice.
    Screenshots go to .ww/artifacts/e2e-browser/. Marked `browser`: run by `make e2e-browser`;
    a fresh machine has no Chromium, so `make test` deselects it."""
    import re

    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    clock = Stopwatch()
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=3), today - timedelta(days=2)
    home = dagster_home(tmp_path / "dagster_home", REPO / "dagster.yaml")
    env = ui_env(ww_env, home, today, monkeypatch)
    settings, chunks = create_plant_and_catalog(env, days=3, tags=8)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with dagster_services(env, tmp_path / "logs") as ui:
        graphql = ui.webserver.graphql
        keys = backfill_and_verify(ui, settings, chunks, first, last, clock)
        check_names = sorted(ui_graphql.check_names(graphql, HISTORY))
        # the healthy plant is green: every check of every partition passed, WARN ones too
        latest = ui_graphql.partition_check_results(graphql, HISTORY, check_names, keys)
        assert all(e and e["evaluation"]["success"] for e in latest.values()), latest
        # the sync sensor's runs, and the freshness check they evaluate, pass
        wait_for(
            "a successful sync run",
            lambda: ui_graphql.runs(graphql, {"dagster/sensor_name": SYNC_SENSOR}, ["SUCCESS"]),
            timeout_s=180, interval_s=2, alive=ui.check_alive,
        )
        freshness = graphql(ui_graphql.CHECK_EXECUTIONS, {
            "path": ["wonderware", "history_sync"], "name": "history_sync_lag_within_limit",
            "partition": None})["assetCheckExecutions"]
        assert freshness and freshness[0]["evaluation"]["success"], freshness
        focus = f"{chunks[0]}|{first}"
        rows = slice_count(settings, catalog_tags(settings, [chunks[0]]), first)
        clock.lap(f"backfill, checks and a sync done; {focus} has {rows} rows in ClickHouse")

        # a new instance greets its first visitor with a welcome dialog over the page; this is
        # what its Skip button sends
        assert graphql("mutation { setNuxSeen }")["setNuxSeen"]
        base = ui.webserver.base_url
        page_url = f"{base}/assets/{'/'.join(HISTORY)}"
        with sync_playwright() as playwright:
            # a new, empty profile (Playwright's persistent context is how it takes one)
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1000},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(60_000)

                def shot(name: str) -> None:
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

                # the asset graph of the group: every asset there, none failed
                page.goto(f"{base}/asset-groups/wonderware")
                for name in ("tags", "history", "history_sync", "history_1min"):
                    expect(page.get_by_text(name, exact=True).first).to_be_visible()
                expect(page.get_by_text(re.compile("failed", re.IGNORECASE))).to_have_count(0)
                shot("1-asset-graph")

                # the history partitions: both chunks, the backfilled days, none failed
                page.goto(f"{page_url}?view=partitions")
                expect(page.get_by_text("chunk-0001").first).to_be_visible()
                expect(page.get_by_text(str(first)).first).to_be_visible()
                expect(page.get_by_text(f"Materialized ({len(keys)})")).to_be_visible()
                expect(page.get_by_text("Failed (0)")).to_be_visible()
                shot("2-history-partitions")

                # one partition's own figures: its rows are ClickHouse's count of its slice
                page.goto(f"{page_url}?view=partitions&partition={focus}")
                expect(page.get_by_text("rows_per_s").first).to_be_visible()
                expect(page.get_by_text(re.compile(rf"^({rows:,}|{rows})$")).first).to_be_visible()
                shot("3-one-partition")

                # the checks tab: every check listed, none failed
                page.goto(f"{page_url}?view=checks")
                expect(page.get_by_text(f"Checks ({len(check_names)})")).to_be_visible()
                for name in check_names:
                    # long names are middle-truncated: a hidden copy measures the full text
                    expect(page.get_by_text(name).first).to_be_attached()
                expect(page.get_by_text("Succeeded").first).to_be_visible()
                expect(page.get_by_text(re.compile("^Failed"))).to_have_count(0)
                expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
                shot("4-history-checks")

                # the sync's latest materialization, with its lag
                page.goto(f"{base}/assets/wonderware/history_sync?view=events")
                shot("5-sync-events")
                expect(page.get_by_text("lag_seconds").first).to_be_visible()
            finally:
                context.close()
        clock.lap(f"screenshots in {ARTIFACTS}")
        shut_down(ui, clock)


def slice_count(settings: Settings, tags: list[str], day: date) -> int:
    """ClickHouse's count of one partition's slice, as a plain SELECT sees it."""
    warehouse = ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)
    start, end = day_bounds(day)
    with warehouse.connect() as conn:
        table = conn.query(
            f"SELECT count() AS n FROM {warehouse.database}.{HISTORY_TABLE} "
            "WHERE TagName IN {tags:Array(String)} AND DateTime >= {a:DateTime64(3, 'UTC')} "
            "AND DateTime < {b:DateTime64(3, 'UTC')}",
            {"tags": tags, "a": naive_utc(start), "b": naive_utc(end)},
        )
    return int(table.to_pylist()[0]["n"])
