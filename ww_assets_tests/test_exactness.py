"""A materialized partition holds exactly the historian's stored points."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from ww_assets.emulator import store
from ww_assets.historian import rows_to_batch
from ww_assets.history_store import HISTORY_TABLE, replace_slice
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import (
    COPIED_TAGS,
    DAYS,
    build_trap_plant,
    stored_points,
    warehouse_points,
    warehouse_points_between,
)

FIRST, LAST = DAYS[0], DAYS[-1]


@pytest.fixture
def loaded(pipeline: Pipeline) -> Pipeline:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    return pipeline


def _all_keys(p: Pipeline) -> tuple[str, str]:
    chunks = p.chunks()
    return f"{chunks[0]}|{FIRST}", f"{chunks[-1]}|{LAST}"


def _assert_exact(p: Pipeline) -> list[tuple]:
    expected = stored_points(p.settings.historian_sqlite, COPIED_TAGS, FIRST, LAST)
    actual = warehouse_points(p.warehouse, COPIED_TAGS, FIRST, LAST)
    assert len(actual) == len(expected)
    assert actual == expected
    return actual


def test_catalog_excludes_system_tags_and_chunks_by_size(loaded: Pipeline) -> None:
    assert loaded.chunks() == ["chunk-0001", "chunk-0002"]  # 6 tags, chunk size 4


def test_range_run_copies_exactly_the_stored_points(loaded: Pipeline) -> None:
    result = loaded.materialize_history(*_all_keys(loaded))
    assert result.success
    rows = _assert_exact(loaded)
    # the traps are in the data: midnight ±1 ms, DST hour, NULL bad points, strings
    assert any(r[1].endswith("23:59:59.999") for r in rows)
    assert any(r[1].endswith("00:00:00.000") for r in rows)
    assert any(r[2] is None and r[4] == 1 for r in rows)
    assert any(r[0] == "Operator's;--Note" and r[3] == "it's fine; -- ok" for r in rows)
    assert sum(1 for r in rows if r[0] == 'Zähler "7".Count') == 24
    # no synthetic initial-value rows
    assert not any(r[4] == 133 or r[5] == 65536 for r in rows)
    partitions = {e.partition for e in result.get_asset_materialization_events()}
    assert len(partitions) == len(DAYS) * 2


def test_any_grouping_and_reruns_leave_the_same_rows(loaded: Pipeline) -> None:
    assert loaded.materialize_history(*_all_keys(loaded)).success
    first = _assert_exact(loaded)
    for chunk in loaded.chunks():  # again, one run per partition
        for day in DAYS:
            assert loaded.materialize_history(f"{chunk}|{day}").success
    assert _assert_exact(loaded) == first
    chunks = loaded.chunks()  # again, a differently shaped range
    assert loaded.materialize_history(f"{chunks[0]}|{DAYS[1]}", f"{chunks[-1]}|{DAYS[2]}").success
    assert _assert_exact(loaded) == first
    with loaded.warehouse.connect() as conn:  # a merge keeps each point's newest row
        conn.command("OPTIMIZE TABLE wonderware.WonderwareHistoryVersions FINAL")
    assert _assert_exact(loaded) == first


def test_partition_replaces_whatever_an_earlier_load_left(loaded: Pipeline) -> None:
    """Rows of another load in the slice (a sync's overlap, a crashed run's partial insert, a
    point since deleted in the historian) are gone after the partition materializes."""
    chunk = loaded.chunks()[0]
    day = DAYS[1]
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    tags = COPIED_TAGS
    stale = [
        (tag, (start + timedelta(hours=h)).replace(tzinfo=None), 1.0, "1.0", 0, 192, 192,
         *([None] * 26))
        for tag in tags
        for h in (0, 5)
    ]
    batch = rows_to_batch([_full_row(r) for r in stale])
    replace_slice(loaded.warehouse, tags, start, start + timedelta(days=1), [batch])
    assert loaded.materialize_history(f"{chunk}|{day}", f"{loaded.chunks()[-1]}|{day}").success
    expected = stored_points(loaded.settings.historian_sqlite, tags, day, day)
    assert warehouse_points(loaded.warehouse, tags, day, day) == expected


def _full_row(short: tuple) -> tuple:
    tag, moment, value, vvalue, q, qd, opc = short[:7]
    row = [None] * 33
    row[0], row[1], row[2], row[3], row[4], row[5], row[6] = moment, tag, value, vvalue, q, qd, opc
    row[11] = "Full"
    return tuple(row)


def test_late_point_arrives_on_rematerialization(loaded: Pipeline) -> None:
    keys = _all_keys(loaded)
    assert loaded.materialize_history(*keys).success
    conn = store.connect(loaded.settings.historian_sqlite)
    late = datetime(2025, 11, 1, 13, 14, 15, 678000, tzinfo=timezone.utc)
    store.add_points(conn, [("Tank.Level", late, 42.0, "42.0", 0, 192, 192)])
    conn.close()
    assert loaded.materialize_history(*keys).success
    rows = _assert_exact(loaded)
    assert ("Tank.Level", "2025-11-01 13:14:15.678", 42.0, "42.0", 0, 192, 192) in rows


def test_server_time_zone_does_not_change_the_copy(
    loaded: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is UTC whatever the historian's local zone (wwTimeZone = 'UTC')."""
    assert loaded.materialize_history(*_all_keys(loaded)).success
    before = _assert_exact(loaded)
    monkeypatch.setenv("WONDERWARE_EMULATOR_TIMEZONE", "Pacific/Auckland")

    loaded.reload()
    assert loaded.materialize_history(*_all_keys(loaded)).success
    assert _assert_exact(loaded) == before


def test_missing_chunk_catalog_fails_naming_the_chunk(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    pipeline.instance.add_dynamic_partitions("tag_chunks", ["chunk-0009"])
    result = pipeline.materialize_history(f"chunk-0009|{date(2025, 11, 1)}")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "chunk-0009" in str(failure) and "wonderware/tags" in str(failure)


def test_arrow_batches_hold_pymssql_like_rows() -> None:
    """rows_to_batch keeps milliseconds and cuts sub-millisecond digits."""
    row = _full_row(("T", datetime(2025, 1, 1, 0, 0, 0, 123999), 1.5, "1.5", 0, 192, 192))
    batch = rows_to_batch([row])
    assert batch.schema.field("DateTime").type == pa.timestamp("ms", tz="UTC")
    assert batch.column(0)[0].as_py() == datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=timezone.utc)


def test_a_source_that_repeats_a_key_is_seen_once_and_counted_short(pipeline: Pipeline) -> None:
    """A key the source returned twice in one load is stored twice (`optimize_on_insert = 0`
    skips the collapse inside a block), and readers see it once, the last row: the count
    readers see is then one short of the source's, which the row-count check reports."""
    from ww_assets.history_store import HISTORY_STORE, ensure_schema
    from ww_assets.check_sql import duplicate_keys, summarize

    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    moment = datetime(2025, 6, 1, 10)
    rows = [_full_row(("Tank.Level", moment, v, str(v), 0, 192, 192)) for v in (1.0, 2.0)]
    with pipeline.warehouse.connect() as conn:
        ensure_schema(conn, pipeline.warehouse.database)
    stats = replace_slice(
        pipeline.warehouse, ["Tank.Level"], start, start + timedelta(days=1), [rows_to_batch(rows)]
    )
    assert stats.rows == 2
    with pipeline.warehouse.connect() as conn:
        db = pipeline.warehouse.database
        summary = summarize(conn, db, ["Tank.Level"], [start.date()], datetime.now(timezone.utc))
        found = duplicate_keys(conn, db, summary)
        stored = conn.query(f"SELECT count() AS n FROM {db}.{HISTORY_STORE}").column("n")[0]
        seen = conn.query(f"SELECT Value FROM {db}.{HISTORY_TABLE}").column("Value").to_pylist()
    assert found[start.date()].keys == 0 and stored.as_py() == 2 and seen == [2.0]
    assert [t.rows for t in summary.days[start.date()]] == [1]


def test_a_slice_keeps_only_its_tags_and_its_window(pipeline: Pipeline) -> None:
    """Whatever the source returns, a partition stores only its tags in [day, day + 1): the
    batches that lie inside pass whole, the others are filtered row by row, and the figures
    (rows, first and last point, tags with rows) are those of the stored rows."""
    from ww_assets.history_store import ensure_schema

    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    sources = [
        [("A", datetime(2025, 6, 1, 0, 0)), ("B", datetime(2025, 6, 1, 12))],  # inside
        [("A", datetime(2025, 6, 1, 23, 59, 59, 999000)), ("A", datetime(2025, 6, 2))],  # end
        [("A", datetime(2025, 5, 31, 23, 59, 59, 999000)), ("B", datetime(2025, 6, 1, 6))],
        [("C", datetime(2025, 6, 1, 6)), ("B", datetime(2025, 6, 1, 7))],  # another chunk's tag
    ]
    batches = [rows_to_batch([_full_row((tag, moment, 1.0, "1.0", 0, 192, 192))
                              for tag, moment in rows]) for rows in sources]  # fmt: skip
    with pipeline.warehouse.connect() as conn:
        ensure_schema(conn, pipeline.warehouse.database)
    stats = replace_slice(pipeline.warehouse, ["A", "B"], start, end, batches)
    assert stats.rows == 5 and stats.rejected == 0
    assert stats.tags_with_rows == {"A", "B"}
    assert stats.min_time == start
    assert stats.max_time == datetime(2025, 6, 1, 23, 59, 59, 999000, tzinfo=timezone.utc)
    stored = warehouse_points_between(pipeline.warehouse, ["A", "B", "C"],
                                      start - timedelta(days=1), end + timedelta(days=1))
    assert len(stored) == 5


def test_a_load_that_waited_for_the_session_replaces_the_one_it_waited_for(
    loaded: Pipeline,
) -> None:
    """Two loads of one partition at once (a nightly refresh and a repair run, say), one of
    them waiting for embedded ClickHouse's lock while a run holds its session between
    partitions: the waiting load takes its LoadId once the session is its own, so its rows
    replace the other load's and readers see every point once."""
    from threading import Thread

    from ww_assets.historian import EmulatorHistorian
    from ww_assets.history_query import day_bounds
    from ww_assets.warehouse import HeldSessions
    from ww_assets_tests.services.processes import wait_for

    store = loaded.warehouse
    historian = EmulatorHistorian(loaded.settings.historian_sqlite, loaded.settings.tag_types)
    start, end = day_bounds(FIRST)
    loads: list[object] = []

    def load(warehouse: object) -> None:
        batches = historian.read_history(COPIED_TAGS, start, end)
        loads.append(replace_slice(warehouse, COPIED_TAGS, start, end, batches))  # type: ignore[arg-type]

    with HeldSessions(store, hold_s=60) as held:
        with held.connect():
            pass  # a run's session, held open between its partitions
        stamp = store.wait_stamp()
        waiting = Thread(target=load, args=(store,))
        waiting.start()
        wait_for("the second load to wait for the session",
                 lambda: store.wait_stamp() != stamp, timeout_s=60, interval_s=0.02)  # fmt: skip
        load(held)
    waiting.join(timeout=120)
    assert len(loads) == 2
    expected = stored_points(loaded.settings.historian_sqlite, COPIED_TAGS, FIRST, FIRST)
    assert warehouse_points(store, COPIED_TAGS, FIRST, FIRST) == expected

