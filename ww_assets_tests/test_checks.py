"""Per-partition checks of wonderware/history: recorded per partition in the instance, failing
for exactly the corrupted partition, passing again after re-materialization."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pyarrow as pa
import pytest

from ww_assets.history_store import HISTORY_STORE, HISTORY_TABLE
from ww_assets.wonderware.keys import (
    BLOCKING_CHECKS,
    HISTORY_CHECKS,
    IN_WINDOW,
    NO_DUPLICATES,
    QUALITY,
    ROWCOUNT,
    history_check_keys,
)
from ww_assets.wonderware.verdicts import checks_summary, partition_verdicts
from ww_assets_tests.conftest import Pipeline, free_port
from ww_assets_tests.plant_fixtures import (
    DAYS,
    build_trap_plant,
    off_the_second_shard,
    on_a_second_shard,
)

HISTORY = dg.AssetKey(["wonderware", "history"])


@pytest.fixture
def loaded(pipeline: Pipeline) -> Pipeline:
    """The trap plant, catalogued and loaded for every day × chunk in one range run."""
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    chunks = pipeline.chunks()
    assert pipeline.materialize_history(f"{chunks[0]}|{DAYS[0]}", f"{chunks[-1]}|{DAYS[-1]}").success
    return pipeline


def all_keys(p: Pipeline) -> list[str]:
    return [f"{c}|{d}" for c in p.chunks() for d in DAYS]


def statuses(p: Pipeline, name: str) -> dict[str, str]:
    """Current status per partition of one check, from the instance's check records."""
    infos = p.instance.event_log_storage.get_asset_check_partition_info(
        [dg.AssetCheckKey(HISTORY, name)]
    )
    return {
        i.partition_key: i.latest_execution_status.value
        for i in infos
        if i.is_current and i.partition_key is not None
    }


def evaluation(p: Pipeline, name: str, partition: str) -> dg.AssetCheckEvaluation:
    records = p.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(HISTORY, name), limit=100
    )
    for record in records:
        if record.partition == partition and record.event and record.event.asset_check_evaluation:
            return record.event.asset_check_evaluation
    raise AssertionError(f"no evaluation of {name} for {partition}")


def test_every_partition_gets_its_own_check_results(loaded: Pipeline) -> None:
    keys = all_keys(loaded)
    for name in BLOCKING_CHECKS:
        assert statuses(loaded, name) == dict.fromkeys(keys, "SUCCEEDED"), name
    # Tank.Level has 1/7 doubtful and 1/17 bad points: its chunk warns, the other does not
    quality = statuses(loaded, QUALITY)
    tank_chunk = loaded.chunks()[-1]
    assert {k for k, s in quality.items() if s == "FAILED"} == {f"{tank_chunk}|{d}" for d in DAYS}
    worst = evaluation(loaded, QUALITY, f"{tank_chunk}|{DAYS[1]}").metadata["worst_tags"].value
    assert worst[0]["tag"] == "Tank.Level"  # type: ignore[index]
    rowcount = evaluation(loaded, ROWCOUNT, keys[1]).metadata
    assert rowcount["expected_rows_historian"].value == rowcount["actual_rows_clickhouse"].value > 0
    verdicts = partition_verdicts(loaded.instance, keys)
    assert all(v.verified for v in verdicts.values())
    summary = checks_summary(loaded.instance)
    assert summary["partitions_verified"] == len(keys) and not summary["partitions_failing"]

    # the source-count check alone, for any range of partitions (as launched from the UI)
    first, last = keys[1], keys[2]
    result = loaded.run_checks(first, last, [dg.AssetCheckKey(HISTORY, ROWCOUNT)])
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {(e.check_name, e.partition) for e in evaluations} == {(ROWCOUNT, first), (ROWCOUNT, last)}
    assert all(e.passed for e in evaluations)


def test_corruption_fails_the_matching_check_for_exactly_that_partition(loaded: Pipeline) -> None:
    chunks = loaded.chunks()
    deleted, duplicated, strayed = (
        f"{chunks[0]}|{DAYS[1]}",
        f"{chunks[1]}|{DAYS[2]}",
        f"{chunks[0]}|{DAYS[3]}",
    )
    temperature = "Reactor01.Temperature"  # chunk-0002 holds Tank.Level (sorted by name)
    with loaded.warehouse.connect() as conn:
        # rows deleted from one slice
        conn.command(
            f"DELETE FROM wonderware.{HISTORY_STORE} WHERE TagName = {{t:String}} "
            "AND toDate(DateTime) = {d:Date}",
            {"t": "Kühlwasser Pumpe.Status", "d": DAYS[1]},
        )
        # a duplicate of one row of another slice, as readers would see it from two shards
        duplicate = conn.query(
            f"SELECT * FROM wonderware.{HISTORY_TABLE} "
            "WHERE TagName = {t:String} AND toDate(DateTime) = {d:Date} ORDER BY DateTime LIMIT 1",
            {"t": "Tank.Level", "d": DAYS[2]},
        )
        on_a_second_shard(conn, "wonderware", duplicate)
        # a row that a third slice's load wrote outside its day (no other partition holds it)
        row = conn.query(
            f"SELECT * FROM wonderware.{HISTORY_TABLE} WHERE TagName = {{t:String}} "
            "AND DateTime >= {a:DateTime64(3, 'UTC')} AND DateTime < {b:DateTime64(3, 'UTC')} "
            "LIMIT 1",
            {"t": temperature, "a": datetime(2025, 11, 3, 0, 0, 0, 500000),
             "b": datetime(2025, 11, 4)},
        )
        stray = pa.array([datetime(2025, 12, 24, 12, tzinfo=timezone.utc)], row["DateTime"].type)
        conn.insert(
            f"wonderware.{HISTORY_STORE}",
            row.set_column(row.column_names.index("DateTime"), "DateTime", stray),
        )
    keys = [*all_keys(loaded)]
    result = loaded.run_checks(keys[0], keys[-1], history_check_keys())
    assert not result.success  # blocking checks failed
    failed = {
        name: {k for k, s in statuses(loaded, name).items() if s == "FAILED"}
        for name in BLOCKING_CHECKS
    }
    assert failed[ROWCOUNT] == {deleted, duplicated}
    assert failed[NO_DUPLICATES] == {duplicated}
    assert failed[IN_WINDOW] == {strayed}
    gone = evaluation(loaded, ROWCOUNT, deleted).metadata
    assert gone["actual_rows_clickhouse"].value == gone["expected_rows_historian"].value - 24
    assert evaluation(loaded, IN_WINDOW, strayed).metadata["actual_rows_outside_window"].value == 1
    summary = checks_summary(loaded.instance)
    assert set(summary["partitions_failing"]) == {deleted, duplicated, strayed}  # type: ignore[arg-type]

    # the rollup does not run for a day with a failing partition, and says why
    assert loaded.materialize_rollup(DAYS[0]).success
    blocked = loaded.materialize_rollup(DAYS[1])
    assert not blocked.success
    message = str(blocked.get_step_failure_events()[0].step_failure_data.error)
    assert f"{deleted}: failed {ROWCOUNT}" in message

    with loaded.warehouse.connect() as conn:  # the shards put right
        off_the_second_shard(conn, "wonderware")
    for key in (deleted, duplicated, strayed):
        assert loaded.materialize_history(key).success  # the checks run with it
    for name in BLOCKING_CHECKS:
        assert statuses(loaded, name) == dict.fromkeys(keys, "SUCCEEDED"), name
    assert all(v.verified for v in partition_verdicts(loaded.instance, keys).values())
    assert loaded.materialize_rollup(DAYS[1]).success


def test_check_names_are_the_issue_s(pipeline: Pipeline) -> None:
    graph = pipeline.defs.resolve_asset_graph()
    specs = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys if k.asset_key == HISTORY}
    assert set(specs) == set(HISTORY_CHECKS)
    assert {n for n, s in specs.items() if s.blocking} == set(BLOCKING_CHECKS)
    assert all(s.partitions_def is not None for s in specs.values())


def test_an_unreachable_historian_fails_only_the_source_count(
    loaded: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ClickHouse-side checks still report; the source count has no result, so the
    partitions are not verified (and the rollup waits) until a rerun can count again."""
    keys = all_keys(loaded)
    first, last = keys[0], keys[1]
    monkeypatch.setenv("WONDERWARE_HOST", "127.0.0.1")
    monkeypatch.setenv("WONDERWARE_PORT", str(free_port()))  # nothing listens there
    loaded.reload()

    result = loaded.run_checks(first, last, history_check_keys())
    assert not result.success
    error = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "127.0.0.1" in error, error
    ran = {(e.check_name, e.partition) for e in result.get_asset_check_evaluations()}
    assert ran == {(name, key) for name in HISTORY_CHECKS if name != ROWCOUNT for key in (first, last)}
    verdicts = partition_verdicts(loaded.instance, [first, last])
    assert all(not v.verified and v.unchecked == [ROWCOUNT] for v in verdicts.values())

    monkeypatch.delenv("WONDERWARE_HOST")
    loaded.reload()
    assert loaded.run_checks(first, last, history_check_keys()).success
    assert all(v.verified for v in partition_verdicts(loaded.instance, [first, last]).values())


def run_checks_without_partition(p: Pipeline) -> dg.ExecuteInProcessResult:
    """The history checks launched with no partition, as the UI's "Execute all" does."""
    job = dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks(*history_check_keys()))
    defs = dg.Definitions.merge(p.defs, dg.Definitions(jobs=[job]))
    return defs.resolve_job_def("checks_only").execute_in_process(
        instance=p.instance, raise_on_error=False
    )


def test_checks_without_a_partition_check_every_loaded_partition(loaded: Pipeline) -> None:
    keys = all_keys(loaded)
    healthy = run_checks_without_partition(loaded)
    assert healthy.success
    ran = {(e.check_name, e.partition) for e in healthy.get_asset_check_evaluations()}
    assert ran == {(name, key) for name in HISTORY_CHECKS for key in keys}
    assert statuses(loaded, ROWCOUNT) == dict.fromkeys(keys, "SUCCEEDED")

    # quiet must not mean blind: rows deleted from one slice turn its source count red
    corrupted = f"{loaded.chunks()[0]}|{DAYS[2]}"
    with loaded.warehouse.connect() as conn:
        conn.command(
            f"DELETE FROM wonderware.{HISTORY_STORE} WHERE TagName = {{t:String}} "
            "AND toDate(DateTime) = {d:Date}",
            {"t": "Kühlwasser Pumpe.Status", "d": DAYS[2]},
        )
    result = run_checks_without_partition(loaded)
    assert not result.success  # a blocking check failed
    assert {k for k, s in statuses(loaded, ROWCOUNT).items() if s == "FAILED"} == {corrupted}
    assert set(checks_summary(loaded.instance)["partitions_failing"]) == {corrupted}  # type: ignore[arg-type]


def test_checks_without_a_partition_and_nothing_loaded_do_nothing(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    result = run_checks_without_partition(pipeline)
    assert result.success
    assert result.get_asset_check_evaluations() == []
    logged = [e.user_message for e in pipeline.instance.all_logs(result.run_id)]
    assert any("no partition of wonderware/history is loaded yet" in m for m in logged)


def test_status_text_names_the_warnings(loaded: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    from ww_assets.cli import _print_checks

    _print_checks(checks_summary(loaded.instance))
    out = capsys.readouterr().out
    tank_chunk = loaded.chunks()[-1]
    assert f"{len(all_keys(loaded))} of {len(all_keys(loaded))} loaded partitions verified" in out
    assert (f"warning {QUALITY} on {len(DAYS)} partitions: "
            + ", ".join(f"{tank_chunk}|{d}" for d in DAYS)) in out
