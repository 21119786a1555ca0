"""Retries as Dagster runs them: transient faults retried in place then per step, the circuit
breaker failing fast, permanent faults failing at once."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ww_assets_tests.conftest import Pipeline, free_port


def _messages(p: Pipeline, run_id: str) -> list[str]:
    return [e.message or "" for e in p.instance.all_logs(run_id)]


def _events(p: Pipeline, run_id: str, kind: dg.DagsterEventType) -> list:
    return [e for e in p.instance.all_logs(run_id, of_type=kind)]


def test_unreachable_historian_is_retried_with_backoff_then_the_breaker_opens(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WONDERWARE_HOST", "127.0.0.1")
    monkeypatch.setenv("WONDERWARE_PORT", str(free_port()))  # nothing listens: refused
    monkeypatch.setenv("WONDERWARE_LOGIN_TIMEOUT", "2")
    monkeypatch.setenv("WONDERWARE_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("WONDERWARE_RETRY_BASE_DELAY", "0")
    monkeypatch.setenv("WONDERWARE_STEP_RETRIES", "2")
    monkeypatch.setenv("WONDERWARE_STEP_RETRY_DELAY", "0")
    monkeypatch.setenv("WONDERWARE_BREAKER_THRESHOLD", "4")
    pipeline.reload()
    result = pipeline.materialize_tags()
    assert not result.success
    messages = _messages(pipeline, result.run_id)
    retries = [m for m in messages if "transient failure" in m]
    # 3 step attempts × 2 in-place retries each
    assert len(retries) == 6
    assert all("retry" in m and " in 0.0 s" in m for m in retries)
    assert len(_events(pipeline, result.run_id, dg.DagsterEventType.STEP_RESTARTED)) == 2
    # 9 calls: the first 4 reached the closed port and opened the breaker (calls 1, 2 and 4
    # are logged as retries, call 3 ended the first step attempt); calls 5-9 failed fast
    refused = [m for m in retries if "Connection refused" in m]
    fast = [m for m in retries if "circuit breaker" in m and "is open after 4" in m]
    assert len(refused) == 3 and len(fast) == 3
    breakers = list(pipeline.settings.breaker_dir.glob("historian-*.json"))
    assert len(breakers) == 1 and '"opened_at": null' not in breakers[0].read_text()


def test_a_permanent_failure_is_not_retried(pipeline: Pipeline) -> None:
    # no emulator file: a configuration problem, not a passing fault
    result = pipeline.materialize_tags()
    assert not result.success
    assert not any("transient failure" in m for m in _messages(pipeline, result.run_id))
    assert _events(pipeline, result.run_id, dg.DagsterEventType.STEP_RESTARTED) == []
    (failure,) = _events(pipeline, result.run_id, dg.DagsterEventType.STEP_FAILURE)
    text = str(failure.dagster_event.step_failure_data.error)
    assert "ww simulate create" in text and "permanent: not retried" in text


def test_bad_rows_from_the_historian_fail_naming_the_column(tmp_path: Path) -> None:
    from ww_assets.historian import HistorianError, rows_to_batch

    row = [None] * 33
    row[0], row[1], row[2], row[11] = None, "T", "12,5 bar", "Full"
    with pytest.raises(HistorianError, match="History column Value .* not double"):
        rows_to_batch([tuple(row)])


def test_rows_without_a_datetime_are_counted_and_skipped(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from ww_assets.historian import rows_to_batch
    from ww_assets.history_store import ensure_schema, replace_slice
    from ww_assets_tests.plant_fixtures import warehouse_points_between
    from ww_assets.warehouse import ChdbWarehouse

    warehouse = ChdbWarehouse(tmp_path / "ch", "wonderware")
    with warehouse.connect() as conn:
        ensure_schema(conn, "wonderware")
    start = datetime(2025, 11, 2, tzinfo=timezone.utc)
    rows = []
    for moment in (datetime(2025, 11, 2, 1), None, datetime(2025, 11, 2, 2)):
        row = [None] * 33
        row[0], row[1], row[2], row[11] = moment, "T", 1.0, "Full"
        rows.append(tuple(row))
    stats = replace_slice(warehouse, ["T"], start, start + timedelta(days=1), [rows_to_batch(rows)])
    assert (stats.rows, stats.rejected) == (2, 1)
    assert len(warehouse_points_between(warehouse, ["T"], start, start + timedelta(days=1))) == 2


def test_an_empty_tag_list_fails_clearly_and_keeps_the_catalog(pipeline: Pipeline) -> None:
    from ww_assets.emulator import store

    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_tags(conn, [store.TagDef("SysTimeSec", 1, acquisition_type=store.SYSTEM_DRIVER)])  # only a system tag
    conn.close()
    result = pipeline.materialize_tags()
    assert not result.success
    (failure,) = _events(pipeline, result.run_id, dg.DagsterEventType.STEP_FAILURE)
    text = str(failure.dagster_event.step_failure_data.error)
    assert "listed no tags" in text and "WONDERWARE_TAG_TYPES" in text
    assert _events(pipeline, result.run_id, dg.DagsterEventType.STEP_RESTARTED) == []
