"""Tags keep their chunk; new tags get their past loaded by the sensor."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from ww_assets.emulator import store
from ww_assets.history_store import read_active_tags, read_catalog
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import (
    COPIED_TAGS,
    DAYS,
    build_trap_plant,
    stored_points,
    warehouse_points,
)

NEW_TAGS = ["Aaa.First", "Mmm.Middle", "Zzz.Last"]  # sort before, among and after the others


def _catalog(p: Pipeline) -> dict[str, str]:
    with p.warehouse.connect() as conn:
        return {r["TagName"]: r["Chunk"] for r in read_catalog(conn, "wonderware").to_pylist()}


def _sensor_requests(p: Pipeline, cursor: str | None = None) -> dg.SensorResult | list:
    sensor = p.defs.resolve_sensor_def("new_tag_history_sensor")
    context = dg.build_sensor_context(instance=p.instance, definitions=p.defs, cursor=cursor)
    return sensor.evaluate_tick(context)


def _load_ids(p: Pipeline, tags: list[str]) -> list[tuple]:
    with p.warehouse.connect() as conn:
        table = conn.query(
            "SELECT TagName, toString(DateTime) AS t, LoadId FROM wonderware.WonderwareHistory "
            "WHERE TagName IN {tags:Array(String)} ORDER BY TagName, t",
            {"tags": tags},
        )
    return [tuple(r.values()) for r in table.to_pylist()]


def test_new_tags_keep_old_chunks_and_their_history_loads(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    before = _catalog(pipeline)
    assert pipeline.materialize_history(f"chunk-0001|{DAYS[0]}", f"chunk-0002|{DAYS[-1]}").success
    mates = sorted(before)
    mates_loaded = _load_ids(pipeline, mates)
    skipped = _sensor_requests(pipeline)
    assert not skipped.run_requests and "first catalog" in skipped.skip_message
    # a cursor typed by hand in the UI reads from the first refresh, like no cursor
    assert _sensor_requests(pipeline, "by hand").skip_message == skipped.skip_message

    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_tags(conn, [store.TagDef(name, 1, "added later", 0, 10, "bar") for name in NEW_TAGS])
    store.add_points(conn, [
        (name, datetime(2025, 10, 31, tzinfo=timezone.utc) + timedelta(hours=7 * i), float(i),
         repr(float(i)), 0, 192, 192)
        for name in NEW_TAGS for i in range(12)
    ])
    conn.close()
    assert pipeline.materialize_tags().success
    after = _catalog(pipeline)

    assert {t: after[t] for t in before} == before
    assert set(after) == set(before) | set(NEW_TAGS)
    # 7 tags in chunks of 4: chunk-0002 had room for 1, the others open chunk-0003
    assert [after[t] for t in NEW_TAGS] == ["chunk-0002", "chunk-0003", "chunk-0003"]
    assert pipeline.chunks() == ["chunk-0001", "chunk-0002", "chunk-0003"]

    tick = _sensor_requests(pipeline)
    requests = tick.run_requests
    assert [r.tags["ww/chunk"] for r in requests] == ["chunk-0002", "chunk-0003"]
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    assert requests[0].tags["dagster/asset_partition_range_start"] == "chunk-0002|2025-10-01"
    assert requests[0].tags["dagster/asset_partition_range_end"] == f"chunk-0002|{yesterday}"

    assert [json.loads(r.tags["ww/tags"]) for r in requests] == [NEW_TAGS[:1], NEW_TAGS[1:]]

    # run what the sensor asked for, over the plant's days (the whole range is only longer)
    job = pipeline.defs.resolve_job_def("wonderware_history_job")
    for request in requests:
        chunk = request.tags["ww/chunk"]
        result = job.execute_in_process(
            instance=pipeline.instance,
            tags={**request.tags,
                  "dagster/asset_partition_range_start": f"{chunk}|{DAYS[0]}",
                  "dagster/asset_partition_range_end": f"{chunk}|{DAYS[-1]}"},
        )
        assert result.success
        # the historian read only the new tags' own points, once, and counted only them
        own = stored_points(pipeline.settings.historian_sqlite, json.loads(request.tags["ww/tags"]),
                            DAYS[0], DAYS[-1])  # fmt: skip
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["run_historian_read_rows"].value == metadata["run_rows"].value == len(own) > 0
        assert metadata["run_historian_read_queries"].value == len(DAYS)
        checked = {e.partition for e in result.get_asset_check_evaluations()}
        assert checked == {f"{chunk}|{day}" for day in DAYS}
        blocking = [e for e in result.get_asset_check_evaluations() if e.blocking]
        assert blocking and all(e.passed for e in blocking)
    # the chunk-mates' rows are the very rows of their own load, untouched
    assert _load_ids(pipeline, mates) == mates_loaded
    tags = sorted(t for t, c in after.items() if c in ("chunk-0002", "chunk-0003"))
    expected = stored_points(pipeline.settings.historian_sqlite, tags, DAYS[0], DAYS[-1])
    assert any(r[0] in NEW_TAGS for r in expected)
    assert warehouse_points(pipeline.warehouse, tags, DAYS[0], DAYS[-1]) == expected


def test_sensor_sees_new_tags_of_every_refresh_since_its_last_tick(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    first = _sensor_requests(pipeline)
    assert not first.run_requests and "first catalog" in first.skip_message

    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_tags(conn, [store.TagDef("Zzz.Last", 1, "added later", 0, 10, "bar")])
    store.add_points(conn, [("Zzz.Last", datetime(2025, 11, 1, 3, tzinfo=timezone.utc), 1.0,
                             "1.0", 0, 192, 192)])
    conn.close()
    # two refreshes within one sensor interval: the first finds the tag, the second nothing
    assert pipeline.materialize_tags().success
    assert pipeline.materialize_tags().success

    tick = _sensor_requests(pipeline, first.cursor)
    assert [r.tags["ww/chunk"] for r in tick.run_requests] == ["chunk-0002"]
    assert json.loads(tick.run_requests[0].tags["ww/tags"]) == ["Zzz.Last"]
    assert tick.run_requests[0].tags["dagster/asset_partition_range_start"] == (
        "chunk-0002|2025-10-01"
    )
    # evaluating the same tick again asks for the same runs (same run keys: no duplicates)
    again = _sensor_requests(pipeline, first.cursor)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in tick.run_requests]
    assert tick.run_requests[0].run_key
    # and the next tick has nothing left to do
    after = _sensor_requests(pipeline, tick.cursor)
    assert not after.run_requests and after.skip_message


def test_retired_tags_keep_their_chunk_and_leave_the_slices(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    before = _catalog(pipeline)
    conn = store.connect(pipeline.settings.historian_sqlite)
    store.remove_tags(conn, ["Tank.Level"])
    conn.close()
    result = pipeline.materialize_tags()
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["retired_tags"].value == 1
    with pipeline.warehouse.connect() as conn:
        rows = {r["TagName"]: r for r in read_catalog(conn, "wonderware").to_pylist()}
    assert rows["Tank.Level"]["Chunk"] == before["Tank.Level"] and rows["Tank.Level"]["Active"] == 0
    assert set(COPIED_TAGS) - {"Tank.Level"} == {t for t, r in rows.items() if r["Active"]}


def test_a_chunk_of_retired_tags_keeps_its_history_and_blocks_no_run(pipeline: Pipeline) -> None:
    """Every tag of a chunk retired (deleted from the historian): a range run over every
    chunk, as the nightly refresh makes, still copies the other chunks (a late point
    arrives) and leaves the retired tags' stored history as it was."""
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    first, last = f"chunk-0001|{DAYS[0]}", f"chunk-0002|{DAYS[-1]}"
    assert pipeline.materialize_history(first, last).success
    retired = read_active_tags(pipeline.warehouse)["chunk-0002"]
    kept = [t for t in COPIED_TAGS if t not in retired]
    before = warehouse_points(pipeline.warehouse, retired, DAYS[0], DAYS[-1])
    assert before
    late = datetime(2025, 11, 2, 7, 30, 0, 5000, tzinfo=timezone.utc)
    conn = store.connect(pipeline.settings.historian_sqlite)
    store.remove_tags(conn, retired)
    store.add_points(conn, [(kept[0], late, 42.0, "42.0", 0, 192, 192)])
    conn.close()
    assert pipeline.materialize_tags().success
    assert read_active_tags(pipeline.warehouse)["chunk-0002"] == []

    result = pipeline.materialize_history(first, last)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.partition for e in evaluations} >= {f"chunk-0002|{day}" for day in DAYS}
    assert all(e.passed for e in evaluations)
    assert warehouse_points(pipeline.warehouse, kept, DAYS[0], DAYS[-1]) == stored_points(
        pipeline.settings.historian_sqlite, kept, DAYS[0], DAYS[-1]
    )
    assert warehouse_points(pipeline.warehouse, retired, DAYS[0], DAYS[-1]) == before


def test_a_refresh_that_fails_registering_chunks_is_found_again_by_its_rerun(
    pipeline: Pipeline,
) -> None:
    """The chunks are registered before the catalog is written: when registering fails, the
    catalog is as it was, so the rerun reports the same new tags (for the sensor to load their
    past) and registers the new chunk."""
    from ww_assets.catalog import refresh_catalog
    from ww_assets.historian import EmulatorHistorian

    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    before = _catalog(pipeline)
    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_tags(conn, [store.TagDef(name, 1, "added later", 0, 10, "bar") for name in NEW_TAGS])
    conn.close()
    historian = EmulatorHistorian(pipeline.settings.historian_sqlite, pipeline.settings.tag_types)

    def unreachable_instance(chunks: list[str]) -> None:
        raise ConnectionError("Dagster's storage went away")

    with pytest.raises(ConnectionError):
        refresh_catalog(historian.list_tags(), pipeline.warehouse, 4, unreachable_instance)
    assert _catalog(pipeline) == before

    result = pipeline.materialize_tags()
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["new_tags"].value == len(NEW_TAGS)
    assert metadata["chunks_with_new_tags"].value == ["chunk-0002", "chunk-0003"]
    assert pipeline.chunks() == ["chunk-0001", "chunk-0002", "chunk-0003"]


def test_a_catalog_chunk_missing_from_the_partitions_is_registered_again(
    pipeline: Pipeline,
) -> None:
    """A catalog written without its chunk being registered (as an older version could leave
    it) gets the chunk back as a partition at the next catalog refresh."""
    from ww_assets.catalog import refresh_catalog
    from ww_assets.historian import EmulatorHistorian

    build_trap_plant(pipeline.settings.historian_sqlite)
    historian = EmulatorHistorian(pipeline.settings.historian_sqlite, pipeline.settings.tag_types)
    refresh_catalog(historian.list_tags(), pipeline.warehouse, 4)
    assert pipeline.chunks() == []
    assert pipeline.materialize_tags().success
    assert pipeline.chunks() == ["chunk-0001", "chunk-0002"]
