"""The checks' questions to ClickHouse, one scan for many days: each day answers for itself."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from ww_assets.catalog import refresh_catalog
from ww_assets.historian import TagInfo, rows_to_batch
from ww_assets.history_store import HISTORY_STORE, HISTORY_TABLE, ensure_schema, replace_slice
from ww_assets.history_query import day_bounds
from ww_assets.check_sql import (
    duplicate_keys,
    eu_range_report,
    quality_report,
    summarize,
    window_report,
)
from ww_assets.warehouse import ChdbWarehouse
from ww_assets_tests.plant_fixtures import on_a_second_shard

D1, D2 = date(2025, 6, 1), date(2025, 6, 2)
TOMORROW = datetime.now(timezone.utc).date() + timedelta(days=1)
TAGS = ["A", "S"]


def _row(tag: str, moment: datetime, value: float | str | None, quality: int = 0) -> tuple:
    row: list[object] = [None] * 33
    text = value if isinstance(value, str) else (None if value is None else str(value))
    number = None if isinstance(value, str) else value
    row[:7] = [moment.replace(tzinfo=None), tag, number, text, quality, 192, 192]
    return tuple(row)


def _load(store: ChdbWarehouse, day: date, rows: list[tuple]) -> None:
    replace_slice(store, TAGS, *day_bounds(day), [rows_to_batch(rows)])


def test_each_day_of_one_scan_reports_only_its_own_problems(tmp_path: Path) -> None:
    store = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with store.connect() as conn:
        ensure_schema(conn, store.database)
    refresh_catalog([TagInfo("A", 1, None, 0.0, 100.0, "bar"), TagInfo("S", 3)], store, 50)
    t1, t2 = datetime(2025, 6, 1, 8), datetime(2025, 6, 2, 8)
    _load(store, D1, [
        _row("A", t1, 50.0), _row("A", t1 + timedelta(seconds=1), 150.0),
        _row("A", t1 + timedelta(seconds=2), -5.0), _row("A", t1 + timedelta(seconds=3), None, 1),
        _row("S", t1, "batch 7"),
    ])  # fmt: skip
    _load(store, D2, [_row("A", t2 + timedelta(seconds=s), 10.0 + s) for s in range(4)])
    soon = datetime.combine(TOMORROW, datetime.min.time()) + timedelta(hours=12)
    _load(store, TOMORROW, [_row("A", soon, 1.0)])
    days = [D1, D2, TOMORROW]
    now = datetime.now(timezone.utc)
    with store.connect() as conn:
        loads = summarize(conn, store.database, TAGS, days, now)
        d1_load = min(t.load_id for t in loads.days[D1])
        # a row that D1's load wrote 40 days later, and a copy of one row of D2 that readers
        # see as well (on a second shard)
        copy = conn.query(
            f"SELECT * FROM wonderware.{HISTORY_TABLE} WHERE TagName = 'A' "
            "AND DateTime = {t:DateTime64(3, 'UTC')}", {"t": t2},
        )  # fmt: skip
        later = pa.array([t1 + timedelta(days=40)], copy["DateTime"].type)
        stray = copy.set_column(0, "DateTime", later)
        stray = stray.set_column(33, "LoadId", pa.array([d1_load], pa.uint64()))
        conn.insert(f"wonderware.{HISTORY_STORE}", stray)
        conn.insert(f"wonderware.{HISTORY_STORE}", copy)  # a second copy in one store: collapsed
        on_a_second_shard(conn, store.database, copy)

        summary = summarize(conn, store.database, TAGS, days, now)
        dups = duplicate_keys(conn, store.database, summary)
        window = window_report(conn, store.database, summary)
    quality = quality_report(summary)
    eu = eu_range_report(summary)

    assert {d: (r.keys, r.extra_rows) for d, r in dups.items()} == {
        D1: (0, 0), D2: (1, 1), TOMORROW: (0, 0)
    }
    assert dups[D2].samples == [{"tag": "A", "datetime": "2025-06-02 08:00:00.000", "copies": 2}]
    assert {d: (r.outside_window, r.in_future) for d, r in window.items()} == {
        D1: (1, 0), D2: (0, 0), TOMORROW: (0, 1)
    }
    assert window[D1].load_id == d1_load
    assert window[D1].samples[0]["problem"] == "outside window"
    assert window[TOMORROW].samples[0]["problem"] == "in the future"
    assert {d: (r.checked, r.outside) for d, r in eu.items()} == {
        D1: (3, 2), D2: (5, 0), TOMORROW: (1, 0)
    }
    assert eu[D1].offenders == [
        {"tag": "A", "outside": 2, "min": -5.0, "max": 150.0, "min_eu": 0.0, "max_eu": 100.0}
    ]
    assert (quality[D1].points, quality[D1].good) == (5, 4)
    assert quality[D1].worst == [{"tag": "A", "points": 4, "good_ratio": 0.75}]
    assert quality[D2].ratio == 1.0
