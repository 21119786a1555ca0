"""The failure-alert sensor posts failed checks and failed runs as JSON to a real local HTTP
receiver, once each."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from ww_assets.config import Settings
from ww_assets.wonderware.keys import QUALITY, SYNC_FRESH_KEY, history_check_keys
from ww_assets.wonderware.sensors import build_alert_sensor
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import DAYS, build_trap_plant


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_failed_check_and_failed_run_reach_the_webhook(
    pipeline: Pipeline,
    receiver: tuple[str, list[dict[str, object]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = receiver
    monkeypatch.setenv("WONDERWARE_ALERT_WEBHOOK_URL", url)
    sensor = build_alert_sensor(Settings.from_env(), [*history_check_keys(), SYNC_FRESH_KEY])

    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    # Tank.Level's chunk has too few good-quality points: its WARN check fails
    tank = f"{pipeline.chunks()[-1]}|{DAYS[1]}"
    assert pipeline.materialize_history(tank).success
    # the rollup of a day that was never loaded: the run fails
    failed_run = pipeline.materialize_rollup(DAYS[0])
    assert not failed_run.success

    context = dg.build_sensor_context(instance=pipeline.instance)
    sensor(context)
    checks = [a for a in received if a["kind"] == "check_failed"]
    runs = [a for a in received if a["kind"] == "run_failed"]
    assert [(a["check"], a["partition"], a["severity"]) for a in checks] == [(QUALITY, tank, "WARN")]
    assert checks[0]["metadata"]["worst_tags"][0]["tag"] == "Tank.Level"  # type: ignore[index]
    assert [a["run_id"] for a in runs] == [failed_run.run_id]
    assert all(a["source"] == "ww_assets" and a["text"] for a in received)

    count = len(received)
    sensor(dg.build_sensor_context(instance=pipeline.instance, cursor=context.cursor))
    assert len(received) == count  # nothing twice


def test_every_failed_partition_of_a_large_check_run_is_alerted(pipeline: Pipeline) -> None:
    """More failing evaluations of one check than the storage returns in a page (a checks
    run over months that were never loaded): the first tick reports all of them."""
    from datetime import timedelta

    from ww_assets.wonderware.alerts import BATCH, check_alerts
    from ww_assets.wonderware.keys import HISTORY_KEY, ROWCOUNT

    from ww_assets.emulator import store
    from ww_assets.history_store import read_active_tags

    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    chunks = pipeline.chunks()
    start = pipeline.settings.backfill_oldest_time
    days = BATCH // len(chunks) + 5
    # a point a day in every chunk, none of them loaded: every partition fails its row count
    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_points(conn, [
        (tags[0], start + timedelta(days=n, hours=12), 1.0, "1.0", 0, 192, 192)
        for tags in read_active_tags(pipeline.warehouse).values() for n in range(days)
    ])  # fmt: skip
    conn.close()
    first_day, last_day = start.date(), start.date() + timedelta(days=days - 1)
    rowcount = dg.AssetCheckKey(HISTORY_KEY, ROWCOUNT)
    result = pipeline.run_checks(f"{chunks[0]}|{first_day}", f"{chunks[-1]}|{last_day}", [rowcount])
    failed = {e.partition for e in result.get_asset_check_evaluations() if not e.passed}
    assert len(failed) > BATCH

    alerts, newest = check_alerts(pipeline.instance, [rowcount], 0, 0.0)
    assert {a["partition"] for a in alerts} == failed
    assert check_alerts(pipeline.instance, [rowcount], newest, 0.0)[0] == []
