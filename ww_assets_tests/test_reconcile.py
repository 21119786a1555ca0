"""The reconciliation finds late data for exactly its (day, chunk) and its requested runs make
ClickHouse exact again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from ww_assets.emulator import plant, store
from ww_assets.wonderware.keys import REASON_TAG, RECONCILE_RUN_TAG
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import stored_points, warehouse_points
from ww_assets_tests.test_history_query import parse_tsql


@pytest.fixture
def recent(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """A plant of 6 tags with 4 days of history up to now, every complete day loaded; the
    reconciliation compares every one of them."""
    monkeypatch.setenv("WONDERWARE_PIPELINE_RECONCILE_AGES", "1,2,3,4")
    pipeline.reload()
    now = datetime.now(timezone.utc)
    first = now.date() - timedelta(days=4)
    plant.create_plant(
        pipeline.settings.historian_sqlite,
        datetime(first.year, first.month, first.day, tzinfo=timezone.utc), now, n_tags=6,
    )
    assert pipeline.materialize_tags().success
    chunks = pipeline.chunks()
    yesterday = now.date() - timedelta(days=1)
    assert pipeline.materialize_history(f"{chunks[0]}|{first}", f"{chunks[-1]}|{yesterday}").success
    return pipeline


def _reconcile(p: Pipeline) -> dg.ExecuteInProcessResult:
    result = p.defs.resolve_job_def("wonderware_reconcile_job").execute_in_process(instance=p.instance)
    assert result.success
    return result


def test_late_point_is_found_and_reloaded_for_exactly_its_partition(recent: Pipeline) -> None:
    pipeline = recent
    today = datetime.now(timezone.utc).date()
    chunks = pipeline.chunks()
    first, yesterday = today - timedelta(days=4), today - timedelta(days=1)
    late_day = today - timedelta(days=3)
    with pipeline.warehouse.connect() as conn:
        tag, chunk = conn.query(
            "SELECT TagName, Chunk FROM wonderware.WonderwareTags FINAL "
            "WHERE Chunk = {c:String} ORDER BY TagName LIMIT 1", {"c": chunks[-1]}
        ).to_pylist()[0].values()
    late = datetime(late_day.year, late_day.month, late_day.day, 13, 14, 15, 678000, tzinfo=timezone.utc)
    conn_sqlite = store.connect(pipeline.settings.historian_sqlite)
    store.add_points(conn_sqlite, [(tag, late, 42.0, "42.0", 0, 192, 192)])
    conn_sqlite.close()

    result = _reconcile(pipeline)
    differing = f"{chunk}|{late_day}"
    assert result.output_for_node("reconcile_history_counts") == [differing]
    observation = pipeline.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["wonderware", "history"])), limit=1
    ).records[0].asset_observation
    assert observation is not None
    findings = observation.metadata["differing_partitions"].value
    assert [(f["partition"], f["historian_rows"] - f["clickhouse_rows"]) for f in findings] == [  # type: ignore[index,operator,union-attr]
        (differing, 1)
    ]
    assert observation.metadata["coverage"].value.records  # type: ignore[union-attr]

    sensor = pipeline.defs.resolve_sensor_def("reconcile_repair_sensor")
    context = dg.build_run_status_sensor_context(
        sensor_name="reconcile_repair_sensor",
        dagster_instance=pipeline.instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )
    requests = list(sensor(context))  # type: ignore[arg-type,call-overload]
    assert [r.partition_key for r in requests] == [differing]
    assert requests[0].tags[REASON_TAG] == "reconcile"
    assert requests[0].tags[RECONCILE_RUN_TAG] == result.run_id

    repair = pipeline.defs.resolve_job_def("wonderware_history_job").execute_in_process(
        instance=pipeline.instance,
        partition_key=requests[0].partition_key,
        tags=requests[0].tags,
    )
    assert repair.success
    tags = [tag]
    assert warehouse_points(pipeline.warehouse, tags, first, yesterday) == stored_points(
        pipeline.settings.historian_sqlite, tags, first, yesterday
    )
    assert _reconcile(pipeline).output_for_node("reconcile_history_counts") == []


def test_changes_that_cancel_out_in_the_total_are_found_per_tag(recent: Pipeline) -> None:
    """One tag gained a point and another lost one on the same day and chunk: the partition's
    total is unchanged, the per-tag counts are not, so it is reloaded."""
    day = datetime.now(timezone.utc).date() - timedelta(days=2)
    chunk = recent.chunks()[0]
    with recent.warehouse.connect() as conn:
        gained, lost = conn.query(
            "SELECT TagName FROM wonderware.WonderwareTags FINAL "
            "WHERE Chunk = {c:String} ORDER BY TagName LIMIT 2", {"c": chunk}
        ).column("TagName").to_pylist()
    noon = datetime(day.year, day.month, day.day, 12, 0, 0, 123000, tzinfo=timezone.utc)
    sqlite = store.connect(recent.settings.historian_sqlite)
    store.add_points(sqlite, [(gained, noon, 1.0, "1.0", 0, 192, 192)])
    with sqlite:
        sqlite.execute(
            "DELETE FROM Points WHERE TagName = ? AND DateTime = (SELECT min(DateTime) FROM "
            "Points WHERE TagName = ? AND DateTime >= ?)", (lost, lost, f"{day} 00:00:00.000"),
        )  # fmt: skip
    sqlite.close()

    result = _reconcile(recent)
    assert result.output_for_node("reconcile_history_counts") == [f"{chunk}|{day}"]


def test_count_tsql_has_the_read_query_s_predicates_and_parameters() -> None:
    """The historian's side of the counts: same WHERE, same parameters, grouped by tag."""


    from ww_assets.history_query import (
        render_count_tsql,
        render_history_tsql,
        window_query,
    )

    tags = ("Operator's;--Note", 'Zähler "7"', "x'); DROP TABLE t;--")
    query = window_query(tags, datetime(2025, 11, 2, tzinfo=timezone.utc),
                         datetime(2025, 11, 3, tzinfo=timezone.utc))
    sql, params = render_count_tsql(query)
    assert params == render_history_tsql(query)[1]
    assert "'" not in sql

    count, read = parse_tsql(sql), parse_tsql(render_history_tsql(query)[0])
    assert count.args["where"].sql("tsql") == read.args["where"].sql("tsql")
    assert [e.sql("tsql") for e in count.args["group"].expressions] == ["TagName"]
    assert [s.sql("tsql") for s in count.expressions] == ["TagName", "COUNT(*) AS Points"]
