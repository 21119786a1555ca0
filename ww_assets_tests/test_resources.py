"""The resources' purpose-named methods: a step's historian figures counted apart, calls that
share one warehouse session inside `held_session()` and only there."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ww_assets.historian import EmulatorHistorian
from ww_assets.historian_meter import HistorianLedger
from ww_assets.history_query import day_bounds
from ww_assets.history_store import HISTORY_TABLE
from ww_assets.wonderware.resources import HistorianResource, WarehouseResource
from ww_assets_tests.plant_fixtures import COPIED_TAGS, DAYS, build_trap_plant


def _historian(tmp_path: Path) -> HistorianResource:
    build_trap_plant(tmp_path / "historian.sqlite")
    return HistorianResource(
        emulator_path=str(tmp_path / "historian.sqlite"),
        breaker_dir=str(tmp_path / "breakers"),
        ledger_path=str(tmp_path / "load.json"),
    )


def test_metered_counts_the_queries_made_inside_it_and_no_others(tmp_path: Path) -> None:
    historian = _historian(tmp_path)
    start, end = day_bounds(DAYS[1])
    historian.list_tags()  # before: not this step's
    with historian.metered() as load:
        rows = sum(b.num_rows for b in historian.read_history(COPIED_TAGS, start, end))
        counted = historian.count_points(COPIED_TAGS, start, end)
    historian.list_tags()  # after: not this step's either
    figures = load.metadata()
    assert rows > 0 and sum(counted.values()) == rows
    assert figures["historian_read_queries"] == 1 and figures["historian_read_rows"] == rows
    assert figures["historian_count_queries"] == 1 and figures["historian_count_rows"] == rows
    assert figures["historian_catalog_queries"] == 0
    # the machine's ledger counts every query, inside or not
    assert HistorianLedger(tmp_path / "load.json").summary()["catalog"]["queries"] == 2


def test_the_methods_return_what_the_emulator_holds(tmp_path: Path) -> None:
    historian = _historian(tmp_path)
    start, end = day_bounds(DAYS[0])
    plain = EmulatorHistorian(tmp_path / "historian.sqlite", tuple(historian.tag_types))
    assert sorted(t.name for t in historian.list_tags()) == COPIED_TAGS
    assert historian.count_points(COPIED_TAGS, start, end) == plain.count_points(COPIED_TAGS, start, end)


def test_calls_share_one_session_inside_held_session_only(tmp_path: Path) -> None:
    historian = _historian(tmp_path)
    warehouse = WarehouseResource(chdb_path=str(tmp_path / "clickhouse"))
    start, end = day_bounds(DAYS[1])
    batches = list(historian.read_history(COPIED_TAGS, start, end))
    opened: list[int] = []
    store = warehouse._warehouse()  # the store behind the methods, its sessions counted
    connect = store.connect

    def counting_connect():  # type: ignore[no-untyped-def]
        opened.append(1)
        return connect()

    store.connect = counting_connect  # type: ignore[method-assign]
    with warehouse.held_session():
        assert warehouse.active_tags() == {}  # the schema created, no catalog yet
        stats = warehouse.replace_slice(COPIED_TAGS, start, end, batches)
        marks = warehouse.tag_watermarks(start)
        newest = warehouse.newest_point(end)
    assert len(opened) == 1
    assert stats.rows == sum(b.num_rows for b in batches) and set(marks) == stats.tags_with_rows
    assert newest == max(marks.values())
    warehouse.tag_watermarks(start)
    warehouse.tag_watermarks(start)
    assert len(opened) == 3  # outside, each call its own session
    with store.connect() as conn:
        stored = conn.query(f"SELECT count() AS n FROM {warehouse.database}.{HISTORY_TABLE}")
    assert stored.to_pylist()[0]["n"] == stats.rows
    assert isinstance(batches[0], pa.RecordBatch)
