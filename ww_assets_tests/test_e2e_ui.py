"""End to end, as a person uses the Dagster UI: dagster-webserver and dagster-daemon on
workspace.yaml with dagster.yaml (a temporary DAGSTER_HOME, embedded defaults).

The backfill is launched with the GraphQL mutation the UI's launcher sends
(`launchPartitionBackfill` with a `partitionsByAssets` range over 2 days × every tag chunk), the
rows are compared with the historian's stored points, the partition health and every
partitioned check result are read back through GraphQL as the asset page reads them; then one
partition is reloaded with `dagster asset materialize`, the sync sensor is seen producing runs
and is switched off in the UI, and both services stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets_tests import services
from ww_assets_tests.services import (
    HISTORY,
    SYNC_SENSOR,
    assert_rows_exact,
    catalog_tags,
    create_plant_and_catalog,
    ui_env,
)


def test_ui_backfill_cli_partition_and_sync_sensor(
    ww_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = services.Stopwatch()
    today = datetime.now(timezone.utc).date()
    # two complete days, clear of what the sync touches (today and yesterday)
    first, last = today - timedelta(days=3), today - timedelta(days=2)
    home = services.dagster_home(tmp_path / "dagster_home", services.REPO / "dagster.yaml")
    env = ui_env(ww_env, home, today, monkeypatch)
    settings, chunks = create_plant_and_catalog(env, days=3, tags=8)
    assert chunks == ["chunk-0001", "chunk-0002"]
    tags = catalog_tags(settings, chunks)
    clock.lap("plant and tag catalog")

    with services.dagster_services(env, tmp_path / "logs") as ui:
        clock.lap("webserver up")
        graphql = ui.webserver.graphql
        services.backfill_and_verify(ui, settings, chunks, first, last, clock)
        rows = assert_rows_exact(settings, tags, first, last)

        # reload one day of one chunk from the command line
        reload_key = f"{chunks[-1]}|{first}"
        cli = subprocess.run(
            [str(services.BIN / "dagster"), "asset", "materialize", "-m", "ww_assets.definitions",
             "--select", "wonderware/history", "--partition", reload_key],
            cwd=services.REPO, env=env, capture_output=True, text=True, timeout=180,
        )
        assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
        assert len(services.partition_materializations(graphql, HISTORY, reload_key)) == 2
        assert assert_rows_exact(settings, tags, first, last) == rows
        assert services.partition_stats(graphql, HISTORY)["numFailed"] == 0
        clock.lap("dagster asset materialize done")

        # the sync sensor (running by default) produces sync runs that succeed
        services.wait_for(
            "a successful run of the sync sensor",
            lambda: services.runs(graphql, {"dagster/sensor_name": SYNC_SENSOR}, ["SUCCESS"]),
            timeout_s=180, interval_s=2, alive=ui.check_alive,
        )
        clock.lap("sync sensor run succeeded")
        services.shut_down(ui, clock)


ARTIFACTS = services.REPO / ".ww" / "artifacts" / "e2e-browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.mark.browser
def test_browser_asset_page_shows_partition_health_and_checks(
    ww_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless Chromium (Debian's, driven by Playwright without a browser download of its
    own) opens wonderware/history after the backfill: the partitions view shows the health of
    the backfilled partitions and the checks view lists the checks' results. Screenshots go to
    .ww/artifacts/e2e-browser/. Marked `browser`: run by `make e2e-browser`; a fresh machine
    has no Chromium, so `make test` deselects it."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    clock = services.Stopwatch()
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=3), today - timedelta(days=2)
    home = services.dagster_home(tmp_path / "dagster_home", services.REPO / "dagster.yaml")
    env = ui_env(ww_env, home, today, monkeypatch)
    settings, chunks = create_plant_and_catalog(env, days=3, tags=8)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with services.dagster_services(env, tmp_path / "logs") as ui:
        services.backfill_and_verify(ui, settings, chunks, first, last, clock)
        check_names = sorted(services.check_names(ui.webserver.graphql, HISTORY))
        # a new instance greets its first visitor with a welcome dialog over the page; this is
        # what its Skip button sends
        assert ui.webserver.graphql("mutation { setNuxSeen }")["setNuxSeen"]
        page_url = f"{ui.webserver.base_url}/assets/{'/'.join(HISTORY)}"
        with sync_playwright() as playwright:
            # a new, empty profile (Playwright's persistent context is how it takes one)
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1000},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(60_000)

                page.goto(f"{page_url}?view=partitions")
                # the partition health: both chunks, the backfilled days, and the counts
                expect(page.get_by_text("chunk-0001").first).to_be_visible()
                expect(page.get_by_text(str(first)).first).to_be_visible()
                expect(page.get_by_text(f"Materialized ({len(chunks) * 2})")).to_be_visible()
                expect(page.get_by_text("Failed (0)")).to_be_visible()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=ARTIFACTS / "history-partitions.png", full_page=True)

                page.goto(f"{page_url}?view=checks")
                expect(page.get_by_text(f"Checks ({len(check_names)})")).to_be_visible()
                for name in check_names:
                    # long names are middle-truncated: a hidden copy measures the full text
                    expect(page.get_by_text(name).first).to_be_attached()
                expect(page.get_by_text("Succeeded").first).to_be_visible()
                expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=ARTIFACTS / "history-checks.png", full_page=True)
            finally:
                context.close()
        clock.lap(f"screenshots in {ARTIFACTS}")
        services.shut_down(ui, clock)
