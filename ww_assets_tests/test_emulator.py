"""The historian emulator answers History queries with the historian's semantics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets.emulator import store
from ww_assets.emulator.history import HistorianEmulator
from ww_assets.emulator.store import TagDef
from ww_assets.history_query import HistoryQuery, naive_utc, window_query
from ww_assets.schema import COLUMN_NAMES

UTC = timezone.utc
GOOD = (0, 192, 192)
BAD = (1, 0, 0)

TAGS = (
    TagDef("Analog.A", 1, "analog", 0.0, 100.0, "°C"),
    TagDef("Analog.B", 1, "analog b", 0.0, 10.0, "bar"),
    TagDef("Discrete.D", 2, "discrete"),
    TagDef("String.S", 3, "string"),
    TagDef("Operator's.Note", 3, "quote in name"),
    TagDef("Kühlwasser.Temperatur", 1, "non-ASCII", 5.0, 45.0, "°C"),
    TagDef("SysTimeSec", 1, "system", 0.0, 59.0, "s", store.SYSTEM_DRIVER),
)


def _point(tag: str, moment: datetime, value: float | str | None, quality=GOOD) -> tuple:
    if isinstance(value, str):
        return (tag, moment, None, value, *quality)
    vvalue = None if value is None else f"{value:.15g}"
    return (tag, moment, value, vvalue, *quality)


def _emulator(tmp_path: Path, points: list[tuple], tags=TAGS, **kwargs) -> HistorianEmulator:
    path = tmp_path / "historian.sqlite"
    conn = store.connect(path)
    try:
        store.add_tags(conn, tags)
        store.add_points(conn, points)
    finally:
        conn.close()
    return HistorianEmulator(path, **kwargs)


def _rows(emulator: HistorianEmulator, query: HistoryQuery, **kwargs) -> list[dict]:
    return [
        dict(zip(COLUMN_NAMES, row, strict=True))
        for batch in emulator.query(query, **kwargs)
        for row in batch
    ]


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _query(tags, start, end, **kwargs) -> HistoryQuery:
    return HistoryQuery(tags=tuple(tags), start=start, end=end, **kwargs)


# --- rows, types, echoed parameters --------------------------------------------------------


def test_full_utc_returns_every_stored_point_with_pymssql_types(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    emulator = _emulator(
        tmp_path,
        [
            _point("Analog.A", t0, 1.5),
            _point("Analog.A", t0 + timedelta(milliseconds=1500), 1.5),
            _point("Analog.A", t0 + timedelta(seconds=2, milliseconds=7), 2.25),
        ],
    )
    rows = _rows(emulator, _query(["Analog.A"], datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11)))

    assert [r["DateTime"] for r in rows] == [
        datetime(2025, 6, 1, 10),
        datetime(2025, 6, 1, 10, 0, 1, 500_000),
        datetime(2025, 6, 1, 10, 0, 2, 7_000),
    ]
    assert [r["Value"] for r in rows] == [1.5, 1.5, 2.25]
    first = rows[0]
    assert len(first) == 33
    assert first["DateTime"].tzinfo is None
    assert first["StartDateTime"] == first["DateTime"]
    assert first["TagName"] == "Analog.A"
    assert first["VValue"] == "1.5"
    assert (first["Quality"], first["QualityDetail"], first["OpcQuality"]) == GOOD
    assert first["wwRetrievalMode"] == "Full"
    assert first["wwTimeZone"] == "UTC"
    assert first["wwVersion"] == "Latest"
    assert isinstance(first["wwTagKey"], int)
    assert {r["wwTagKey"] for r in rows} == {first["wwTagKey"]}


def test_tag_key_is_stable_and_distinct_per_tag(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1)
    emulator = _emulator(tmp_path, [_point("Analog.A", t0, 1.0), _point("Analog.B", t0, 2.0)])
    query = _query(["Analog.A", "Analog.B"], datetime(2025, 5, 31), datetime(2025, 6, 2))
    first = {r["TagName"]: r["wwTagKey"] for r in _rows(emulator, query)}
    again = {r["TagName"]: r["wwTagKey"] for r in _rows(emulator, query)}
    assert first == again
    assert len(set(first.values())) == 2


def test_echoes_version_and_missing_time_zone(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [_point("Analog.A", _utc(2025, 6, 1, 12), 3.0)])
    rows = _rows(
        emulator,
        _query(["Analog.A"], datetime(2025, 6, 1), datetime(2025, 6, 2), time_zone=None,
               version="Original"),  # fmt: skip
    )
    assert [(r["wwTimeZone"], r["wwVersion"]) for r in rows] == [(None, "Original")]


# --- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_inclusive", "end_inclusive", "expected_minutes"),
    [(False, False, [1]), (True, False, [0, 1]), (False, True, [1, 2]), (True, True, [0, 1, 2])],
)
def test_bound_operators(
    tmp_path: Path, start_inclusive: bool, end_inclusive: bool, expected_minutes: list[int]
) -> None:
    t0 = _utc(2025, 6, 1, 10)
    emulator = _emulator(
        tmp_path, [_point("Analog.A", t0 + timedelta(minutes=m), float(m)) for m in range(3)]
    )
    query = _query(
        ["Analog.A"],
        datetime(2025, 6, 1, 10, 0),
        datetime(2025, 6, 1, 10, 2),
        start_inclusive=start_inclusive,
        end_inclusive=end_inclusive,
    )
    rows = _rows(emulator, query)
    assert [r["DateTime"].minute for r in rows] == expected_minutes
    assert all(r["Quality"] == 0 for r in rows)


def test_empty_and_reversed_windows_return_nothing(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [_point("Analog.A", _utc(2025, 6, 1, 10), 1.0)])
    moment = datetime(2025, 6, 1, 10)
    assert _rows(emulator, _query(["Analog.A"], moment, moment, start_inclusive=True)) == []
    assert _rows(emulator, _query(["Analog.A"], moment, moment - timedelta(hours=1))) == []


# --- initial value -------------------------------------------------------------------------


def test_inclusive_start_returns_initial_values(tmp_path: Path) -> None:
    start = _utc(2025, 6, 1, 10)
    emulator = _emulator(
        tmp_path,
        [
            _point("Analog.A", start - timedelta(minutes=5), 42.0),
            _point("Analog.A", start - timedelta(minutes=1), 43.5),
            _point("Analog.A", start + timedelta(minutes=1), 44.0),
            # Analog.B has nothing before the start.
            _point("Analog.B", start + timedelta(minutes=2), 7.0),
            # String.S has a real point exactly at the start.
            _point("String.S", start - timedelta(minutes=3), "old"),
            _point("String.S", start, "exact"),
        ],
    )
    query = _query(
        ["Analog.A", "Analog.B", "String.S"],
        datetime(2025, 6, 1, 10),
        datetime(2025, 6, 1, 11),
        start_inclusive=True,
    )
    rows = _rows(emulator, query)
    by_tag: dict[str, list[dict]] = {}
    for row in rows:
        by_tag.setdefault(row["TagName"], []).append(row)

    initial_a, real_a = by_tag["Analog.A"]
    assert initial_a["DateTime"] == datetime(2025, 6, 1, 10)
    assert (initial_a["Value"], initial_a["VValue"], initial_a["Quality"]) == (43.5, "43.5", 133)
    assert (real_a["Value"], real_a["Quality"]) == (44.0, 0)

    initial_b, real_b = by_tag["Analog.B"]
    assert initial_b["DateTime"] == datetime(2025, 6, 1, 10)
    assert (initial_b["Value"], initial_b["VValue"]) == (None, None)
    assert initial_b["QualityDetail"] == 65536
    assert initial_b["Quality"] == 1
    assert real_b["Value"] == 7.0

    [exact] = by_tag["String.S"]
    assert (exact["DateTime"], exact["VValue"], exact["Quality"]) == (
        datetime(2025, 6, 1, 10), "exact", 0,
    )  # fmt: skip


def test_exclusive_start_returns_no_synthetic_rows(tmp_path: Path) -> None:
    start = _utc(2025, 6, 1, 10)
    emulator = _emulator(
        tmp_path,
        [
            _point("Analog.A", start - timedelta(minutes=1), 43.5),
            _point("Analog.A", start + timedelta(minutes=1), 44.0),
        ],
    )
    query = _query(["Analog.A", "Analog.B"], datetime(2025, 6, 1, 10), datetime(2025, 6, 1, 11))
    rows = _rows(emulator, query)
    assert [(r["TagName"], r["Value"], r["Quality"]) for r in rows] == [("Analog.A", 44.0, 0)]


# --- time zone -----------------------------------------------------------------------------


def test_local_time_repeats_the_autumn_hour(tmp_path: Path) -> None:
    # America/Chicago 2025-11-02: 01:00-02:00 CDT (06:00-07:00 UTC), then 01:00-02:00 CST again.
    first, second = _utc(2025, 11, 2, 6, 30), _utc(2025, 11, 2, 7, 30)
    emulator = _emulator(
        tmp_path, [_point("Analog.A", first, 1.0), _point("Analog.A", second, 2.0)]
    )
    local = _rows(
        emulator,
        _query(["Analog.A"], datetime(2025, 11, 2), datetime(2025, 11, 2, 3), time_zone=None),
    )
    assert [(r["DateTime"], r["Value"]) for r in local] == [
        (datetime(2025, 11, 2, 1, 30), 1.0),
        (datetime(2025, 11, 2, 1, 30), 2.0),
    ]
    assert all(r["wwTimeZone"] is None for r in local)

    utc = _rows(emulator, _query(["Analog.A"], datetime(2025, 11, 2), datetime(2025, 11, 2, 9)))
    assert [r["DateTime"] for r in utc] == [
        datetime(2025, 11, 2, 6, 30),
        datetime(2025, 11, 2, 7, 30),
    ]


def test_local_bounds_are_server_time(tmp_path: Path) -> None:
    # 10:00 UTC is 05:00 CDT in June: a local window 04:30-05:30 finds it, a UTC one does not.
    emulator = _emulator(tmp_path, [_point("Analog.A", _utc(2025, 6, 1, 10), 1.0)])
    window = (datetime(2025, 6, 1, 4, 30), datetime(2025, 6, 1, 5, 30))
    local = _rows(emulator, _query(["Analog.A"], *window, time_zone=None))
    assert [r["DateTime"] for r in local] == [datetime(2025, 6, 1, 5)]
    assert _rows(emulator, _query(["Analog.A"], *window)) == []


def test_local_time_skips_the_spring_hour(tmp_path: Path) -> None:
    # America/Chicago 2025-03-09: 02:00 CST becomes 03:00 CDT (08:00 UTC).
    before, after = _utc(2025, 3, 9, 7, 59, 59), _utc(2025, 3, 9, 8)
    emulator = _emulator(
        tmp_path, [_point("Analog.A", before, 1.0), _point("Analog.A", after, 2.0)]
    )
    rows = _rows(
        emulator,
        _query(["Analog.A"], datetime(2025, 3, 9, 1), datetime(2025, 3, 9, 4), time_zone=None),
    )
    assert [r["DateTime"] for r in rows] == [
        datetime(2025, 3, 9, 1, 59, 59),
        datetime(2025, 3, 9, 3, 0),
    ]


def test_server_time_zone_and_named_zones(tmp_path: Path) -> None:
    point = _point("Analog.A", _utc(2025, 1, 15, 12), 1.0)
    emulator = _emulator(tmp_path, [point], server_timezone="Europe/Berlin")
    window = (datetime(2025, 1, 15), datetime(2025, 1, 16))
    local = _rows(emulator, _query(["Analog.A"], *window, time_zone=None))
    assert [r["DateTime"] for r in local] == [datetime(2025, 1, 15, 13)]
    tokyo = _rows(emulator, _query(["Analog.A"], *window, time_zone="Asia/Tokyo"))
    assert [(r["DateTime"], r["wwTimeZone"]) for r in tokyo] == [
        (datetime(2025, 1, 15, 21), "Asia/Tokyo")
    ]
    with pytest.raises(ValueError, match="Mars/Olympus"):
        list(emulator.query(_query(["Analog.A"], *window, time_zone="Mars/Olympus")))
    with pytest.raises(ValueError, match="Nowhere/Land"):
        HistorianEmulator(tmp_path / "historian.sqlite", server_timezone="Nowhere/Land")


# --- retrieval modes -----------------------------------------------------------------------


def _discrete_points() -> list[tuple]:
    t0 = _utc(2025, 6, 1, 10)
    values = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    return [_point("Discrete.D", t0 + timedelta(minutes=i), v) for i, v in enumerate(values)]


def test_full_returns_repeated_values_delta_drops_them(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, _discrete_points())
    window = (datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11))
    full = _rows(emulator, _query(["Discrete.D"], *window))
    delta = _rows(emulator, _query(["Discrete.D"], *window, retrieval_mode="Delta"))
    assert [r["Value"] for r in full] == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert [(r["DateTime"].minute, r["Value"]) for r in delta] == [(0, 0.0), (2, 1.0), (5, 0.0)]
    assert all(r["wwRetrievalMode"] == "Delta" for r in delta)


def test_delta_depends_on_where_the_window_starts(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, _discrete_points())
    end = datetime(2025, 6, 1, 11)
    late_start = _rows(
        emulator,
        _query(["Discrete.D"], datetime(2025, 6, 1, 10, 0, 30), end, retrieval_mode="Delta"),
    )
    # Minute 1 repeats minute 0's value, yet it is returned: it is the first of this window.
    assert [(r["DateTime"].minute, r["Value"]) for r in late_start] == [
        (1, 0.0), (2, 1.0), (5, 0.0),
    ]  # fmt: skip

    # With an inclusive start the initial value counts as returned: minute 1 is dropped.
    inclusive = _rows(
        emulator,
        _query(["Discrete.D"], datetime(2025, 6, 1, 10, 0, 30), end, retrieval_mode="Delta",
               start_inclusive=True),  # fmt: skip
    )
    assert [(r["DateTime"], r["Value"], r["Quality"]) for r in inclusive] == [
        (datetime(2025, 6, 1, 10, 0, 30), 0.0, 133),
        (datetime(2025, 6, 1, 10, 2), 1.0, 0),
        (datetime(2025, 6, 1, 10, 5), 0.0, 0),
    ]  # fmt: skip


def test_delta_drops_repeated_nulls(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    values = [1.0, None, None, 2.0, 2.0, None]
    points = [
        _point("Analog.A", t0 + timedelta(seconds=i), v, GOOD if v is not None else BAD)
        for i, v in enumerate(values)
    ]
    emulator = _emulator(tmp_path, points)
    window = (datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11))
    delta = _rows(emulator, _query(["Analog.A"], *window, retrieval_mode="Delta"))
    assert [(r["DateTime"].second, r["Value"]) for r in delta] == [
        (0, 1.0), (1, None), (3, 2.0), (5, None),
    ]  # fmt: skip


def test_other_retrieval_modes_are_refused(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [])
    window = (datetime(2025, 6, 1), datetime(2025, 6, 2))
    query = _query(["Analog.A"], *window, retrieval_mode="Cyclic")
    with pytest.raises(ValueError, match="retrieval mode Cyclic is not emulated"):
        emulator.query(query)


# --- value kinds ---------------------------------------------------------------------------


def test_string_tags_and_delta_on_vvalue(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    texts = ["Idle", "Idle", "Running", "", "", "O'Brien; --"]
    emulator = _emulator(
        tmp_path,
        [_point("String.S", t0 + timedelta(seconds=i), s) for i, s in enumerate(texts)]
        + [_point("String.S", t0 + timedelta(seconds=10), None, BAD)],
    )
    window = (datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11))
    full = _rows(emulator, _query(["String.S"], *window))
    assert [(r["Value"], r["VValue"]) for r in full] == [(None, s) for s in [*texts, None]]
    delta = _rows(emulator, _query(["String.S"], *window, retrieval_mode="Delta"))
    # The empty string is a value of its own, not NULL.
    assert [r["VValue"] for r in delta] == ["Idle", "Running", "", "O'Brien; --", None]


def test_bad_quality_points_are_null_rows(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    emulator = _emulator(
        tmp_path,
        [
            _point("Analog.A", t0, 5.0),
            _point("Analog.A", t0 + timedelta(seconds=1), None, BAD),
            _point("Analog.A", t0 + timedelta(seconds=2), 6.0, (16, 64, 64)),
        ],
    )
    rows = _rows(emulator, _query(["Analog.A"], datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11)))
    assert [(r["Value"], r["VValue"], r["Quality"], r["OpcQuality"]) for r in rows] == [
        (5.0, "5", 0, 192), (None, None, 1, 0), (6.0, "6", 16, 64),
    ]  # fmt: skip


# --- tags, order, batching -----------------------------------------------------------------


def test_rows_ordered_by_tag_then_time_and_unknown_tags_ignored(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    points = [
        _point("Kühlwasser.Temperatur", t0 + timedelta(seconds=2), 20.0),
        _point("Operator's.Note", t0 + timedelta(seconds=1), "note"),
        _point("Analog.B", t0 + timedelta(seconds=3), 1.0),
        _point("Analog.B", t0, 0.5),
        _point("Kühlwasser.Temperatur", t0, 19.0),
    ]
    emulator = _emulator(tmp_path, points)
    tags = ["Operator's.Note", "No.Such.Tag", "Kühlwasser.Temperatur", "Analog.B"]
    rows = _rows(emulator, _query(tags, datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11)))
    keys = [(r["TagName"], r["DateTime"]) for r in rows]
    assert keys == sorted(keys)
    assert [k[0] for k in keys] == [
        "Analog.B", "Analog.B", "Kühlwasser.Temperatur", "Kühlwasser.Temperatur",
        "Operator's.Note",
    ]  # fmt: skip
    day = (datetime(2025, 6, 1), datetime(2025, 6, 2))
    assert _rows(emulator, _query(["No.Such.Tag"], *day)) == []
    assert _rows(
        emulator,
        _query(["No.Such.Tag"], datetime(2025, 6, 1), datetime(2025, 6, 2), start_inclusive=True),
    ) == []


def test_batches_respect_batch_rows(tmp_path: Path) -> None:
    t0 = _utc(2025, 6, 1, 10)
    points = [
        _point(tag, t0 + timedelta(seconds=i), float(i))
        for tag, n in (("Analog.A", 13), ("Analog.B", 7), ("Discrete.D", 5))
        for i in range(n)
    ]
    emulator = _emulator(tmp_path, points)
    query = _query(
        ["Analog.A", "Analog.B", "Discrete.D"], datetime(2025, 6, 1, 9), datetime(2025, 6, 1, 11)
    )
    batches = list(emulator.query(query, batch_rows=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert sum(len(b) for b in emulator.query(query, batch_rows=1)) == 25
    assert [len(b) for b in emulator.query(query)] == [25]
    with pytest.raises(ValueError):
        emulator.query(query, batch_rows=0)


def test_list_tags_excludes_system_tags(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [])
    tags = emulator.list_tags((1, 2, 3))
    names = [t[0] for t in tags]
    assert names == sorted(names)
    assert "SysTimeSec" not in names
    assert set(names) == {t.name for t in TAGS} - {"SysTimeSec"}
    assert ("Analog.A", 1, "analog", 0.0, 100.0, "°C") in tags
    assert ("String.S", 3, "string", None, None, None) in tags
    assert [t[0] for t in emulator.list_tags((2,))] == ["Discrete.D"]


def test_system_tags_are_those_of_the_system_driver_not_of_a_name(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [])
    conn = store.connect(emulator.path)
    store.add_tags(conn, [
        TagDef("System2.Flow", 1, "a plant tag", 0.0, 80.0, "m3/h"),
        TagDef("SysUserCounter", 1, "user tag with a Sys name"),
        TagDef("Plant.Heartbeat", 2, "made by the system driver", acquisition_type=store.SYSTEM_DRIVER),
    ])
    conn.close()
    names = [t[0] for t in emulator.list_tags((1, 2, 3))]
    assert "System2.Flow" in names and "SysUserCounter" in names
    assert "Plant.Heartbeat" not in names and "SysTimeSec" not in names


def test_a_store_of_the_earlier_layout_is_migrated_with_its_points(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE TagRef (TagName TEXT PRIMARY KEY, TagType INTEGER NOT NULL, Description TEXT);"
        "CREATE TABLE AnalogTag (TagName TEXT PRIMARY KEY, MinEU REAL, MaxEU REAL, Unit TEXT);"
        "CREATE TABLE Points (TagName TEXT NOT NULL, DateTime TEXT NOT NULL, Value REAL, "
        "VValue TEXT, Quality INTEGER, QualityDetail INTEGER, OpcQuality INTEGER, "
        "PRIMARY KEY (TagName, DateTime)) WITHOUT ROWID;"
        "INSERT INTO TagRef VALUES ('A.Flow', 1, 'flow'), ('SysTimeSec', 1, 'system'), "
        "('S.Text', 3, 'text');"
        "INSERT INTO AnalogTag VALUES ('A.Flow', 0, 10, 'm3/h'), ('SysTimeSec', 0, 59, 's');"
        "INSERT INTO Points VALUES ('A.Flow', '2025-06-01 00:00:00.000', 1.5, '1.5', 0, 192, 192);"
    )
    old.commit()
    old.close()
    emulator = HistorianEmulator(path)
    assert emulator.list_tags((1, 3)) == [
        ("A.Flow", 1, "flow", 0.0, 10.0, "m3/h"), ("S.Text", 3, "text", None, None, None),
    ]
    counts = emulator.count_points(["A.Flow"], datetime(2025, 6, 1), datetime(2025, 6, 2))
    assert counts == {"A.Flow": 1}


# --- the extractor's window ----------------------------------------------------------------


def test_window_query_returns_exactly_the_stored_points_of_the_window(tmp_path: Path) -> None:
    day = _utc(2025, 6, 1)
    offsets_ms = [-1, 0, 1, 999, 3_600_000, 43_200_123, 86_399_999, 86_400_000, 86_400_001]
    points = [
        _point(tag, day + timedelta(milliseconds=ms), float(i))
        for tag in ("Analog.A", "Discrete.D")
        for i, ms in enumerate(offsets_ms)
    ]
    emulator = _emulator(tmp_path, points)
    tags = ("Analog.A", "Discrete.D")

    def stored(start: datetime, end: datetime) -> list[tuple]:
        return sorted(
            (tag, naive_utc(moment), value)
            for tag, moment, value, *_ in points
            if start <= moment < end
        )

    def read(start: datetime, end: datetime) -> list[tuple]:
        rows = _rows(emulator, window_query(tags, start, end))
        assert all(r["Quality"] != 133 and r["QualityDetail"] != 65536 for r in rows)
        return [(r["TagName"], r["DateTime"], r["Value"]) for r in rows]

    next_day = day + timedelta(days=1)
    whole = read(day, next_day)
    assert whole == stored(day, next_day)
    assert len(whole) == 2 * 6

    noon = day + timedelta(hours=12)
    halves = read(day, noon) + read(noon, next_day)
    assert sorted(halves) == whole
    assert len(set(halves)) == len(halves)


def test_count_points_is_half_open(tmp_path: Path) -> None:
    day = _utc(2025, 6, 1)
    emulator = _emulator(
        tmp_path,
        [
            _point("Analog.A", day - timedelta(milliseconds=1), 1.0),
            _point("Analog.A", day, 1.0),
            _point("Analog.A", day + timedelta(hours=5), None, BAD),
            _point("Analog.A", day + timedelta(days=1), 1.0),
            _point("Analog.B", day + timedelta(hours=1), 1.0),
        ],
    )
    tags = ["Analog.A", "Analog.B", "Discrete.D"]
    counts = emulator.count_points(tags, day, day + timedelta(days=1))
    assert counts == {"Analog.A": 2, "Analog.B": 1, "Discrete.D": 0}
    naive = emulator.count_points(["Analog.A"], datetime(2025, 6, 1), datetime(2025, 6, 2))
    assert naive == {"Analog.A": 2}


# --- storage -------------------------------------------------------------------------------


def test_store_contract_and_helpers(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "historian.sqlite"
    conn = store.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {
            table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for table in store.TABLES
        }
        # AVEVA's own names and leading columns (65431, 1220349, 65357).
        assert columns["TagRef"] == ["wwDomainTagKey", "wwTagKey", "ServerKey", "TagName", "TagType"]
        assert columns["Tag"][:8] == [
            "TagName", "IOServerKey", "StorageNodeKey", "wwTagKey", "TopicKey", "Description",
            "AcquisitionType", "StorageType",
        ]
        assert "Description" not in columns["TagRef"]
        assert columns["AnalogTag"][:8] == [
            "TagName", "EUKey", "MinEU", "MaxEU", "MinRaw", "MaxRaw", "Scaling", "RawType",
        ]
        assert columns["EngineeringUnit"][:2] == ["EUKey", "Unit"]
        assert columns["Points"] == list(store.POINT_COLUMNS)
        store.add_tags(conn, TAGS)
        berlin_noon = datetime(2025, 6, 1, 12, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2)))
        store.add_points(conn, [("Analog.A", berlin_noon, 1.0, "1", *GOOD)])
        # A point at an existing time replaces it (an update with wwVersion Latest).
        same_moment = datetime(2025, 6, 1, 10, 0, 0, 123_000)
        store.add_points(conn, [("Analog.A", same_moment, 2.0, "2", *GOOD)])
        assert conn.execute("SELECT DateTime, Value FROM Points").fetchall() == [
            ("2025-06-01 10:00:00.123", 2.0)
        ]
    finally:
        conn.close()
    store.connect(path).close()  # idempotent
    assert store.format_utc(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02 03:04:05.000"
    assert store.parse_utc("2025-01-02 03:04:05.678") == _utc(2025, 1, 2, 3, 4, 5) + timedelta(
        milliseconds=678
    )


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    emulator = HistorianEmulator(tmp_path / "nothing.sqlite")
    with pytest.raises(FileNotFoundError, match="nothing.sqlite"):
        emulator.list_tags((1,))
    assert not (tmp_path / "nothing.sqlite").exists()


# --- the Arrow path ------------------------------------------------------------------------


def _mixed_points() -> list[tuple]:
    """Every tag kind, bad and doubtful points, milliseconds, both DST changes in Chicago."""
    points = []
    for day in (_utc(2025, 3, 9), _utc(2025, 11, 2)):
        for i in range(0, 24 * 60, 17):
            moment = day + timedelta(minutes=i, milliseconds=i % 1000)
            points.append(_point("Analog.A", moment, round(i * 0.37, 3)))
            bad = i % 5 == 0
            doubtful = (16, 64, 64)
            points.append(_point("Analog.B", moment, None if bad else 1.0, BAD if bad else doubtful))
            points.append(_point("Discrete.D", moment, float((i // 34) % 2)))
            points.append(_point("String.S", moment, f"batch-{i // 100}"))
            points.append(_point("Operator's.Note", moment, "it's; -- fine"))
            points.append(_point("Kühlwasser.Temperatur", moment, 20.0 + (i % 7)))
    return points


@pytest.mark.parametrize(
    ("mode", "time_zone", "start_inclusive", "batch_rows"),
    [
        ("Full", "UTC", False, 100_000),
        ("Full", "UTC", False, 37),
        ("Full", None, False, 64),
        ("Full", "Asia/Tokyo", False, 100_000),
    ],
)
def test_query_arrow_equals_the_row_path(
    tmp_path: Path, mode: str, time_zone: str | None, start_inclusive: bool, batch_rows: int
) -> None:
    """`query_arrow` is the emulator's path for `read_history`; it must give exactly the
    batches that `rows_to_batch` makes of `query`'s pymssql-typed rows, whatever the zone and
    batch size."""
    import pyarrow as pa

    from ww_assets.historian import rows_to_batch

    emulator = _emulator(tmp_path, _mixed_points())
    tags = [t.name for t in TAGS]
    for window in ((datetime(2025, 3, 8, 23), datetime(2025, 3, 10)),
                   (datetime(2025, 11, 1, 22), datetime(2025, 11, 2, 23, 30))):
        query = _query(tags, *window, retrieval_mode=mode, time_zone=time_zone,
                       start_inclusive=start_inclusive)
        rows = [row for batch in emulator.query(query, batch_rows=batch_rows) for row in batch]
        batches = list(emulator.query_arrow(query, batch_rows=batch_rows))
        assert rows, "the window holds points"
        assert all(0 < b.num_rows <= batch_rows for b in batches)
        assert pa.Table.from_batches(batches).equals(pa.Table.from_batches([rows_to_batch(rows)]))


def test_query_arrow_types_columns_that_start_with_a_long_run_of_nulls(tmp_path: Path) -> None:
    """The ADBC driver types each column from its first batch: a tag whose first 3,000 points
    are NULL (bad quality) read in batches of 1,000, and NULL and non-NULL strings, must still
    come back exactly (a first batch of NULLs would otherwise type Value as an integer)."""
    import pyarrow as pa

    from ww_assets.historian import rows_to_batch

    start = _utc(2025, 6, 1)
    points = [
        _point("Analog.B", start + timedelta(seconds=i), None if i < 3000 else i / 8,
               BAD if i < 3000 else GOOD)
        for i in range(4000)
    ] + [
        _point("String.S", start + timedelta(seconds=i), None if i % 2 else f"text {i}")
        for i in range(4000)
    ]  # fmt: skip
    emulator = _emulator(tmp_path, points)
    query = _query(["Analog.B", "String.S"], datetime(2025, 5, 31), datetime(2025, 6, 2),
                   time_zone="UTC", start_inclusive=False)  # fmt: skip
    rows = [row for batch in emulator.query(query) for row in batch]
    table = pa.Table.from_batches(list(emulator.query_arrow(query, batch_rows=1000)))
    assert table.num_rows == 8000
    assert table.column("Value").null_count == 3000 + 4000
    assert table.column("VValue").null_count == 3000 + 2000
    assert table.equals(pa.Table.from_batches([rows_to_batch(rows)]))


def test_query_arrow_reads_every_tag_from_one_snapshot(tmp_path: Path) -> None:
    """A simulator (another process) appending while a read is under way: the tags read after
    the append do not show it, as with the historian's one query; a new read does."""
    import subprocess
    import sys

    start = _utc(2025, 6, 1)
    emulator = _emulator(tmp_path, [
        _point(tag, start + timedelta(seconds=i), float(i))
        for tag in ("Analog.A", "Analog.B") for i in range(50)
    ])  # fmt: skip
    query = _query(["Analog.A", "Analog.B"], datetime(2025, 5, 31), datetime(2025, 6, 2),
                   time_zone="UTC", start_inclusive=False)  # fmt: skip
    batches = emulator.query_arrow(query, batch_rows=10)
    first = next(batches)
    assert set(first.column("TagName").to_pylist()) == {"Analog.A"}
    append = (
        "import sys; from datetime import datetime, timezone; from ww_assets.emulator import store; "
        "conn = store.connect(sys.argv[1]); "
        "store.add_points(conn, [('Analog.B', datetime(2025, 6, 1, 1, tzinfo=timezone.utc), "
        "99.0, '99', 0, 192, 192)]); conn.close()"
    )
    subprocess.run([sys.executable, "-c", append, str(tmp_path / "historian.sqlite")], check=True)
    assert sum(b.num_rows for b in [first, *batches]) == 100
    late = next(emulator.query_arrow(query, batch_rows=1000))
    assert late.num_rows == 101, "a new read sees the appended point"


def test_query_arrow_refuses_what_query_refuses(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path, [_point("Analog.A", _utc(2025, 6, 1, 10), 1.0)])
    window = (datetime(2025, 6, 1), datetime(2025, 6, 2))
    with pytest.raises(ValueError, match="Interpolated"):
        emulator.query_arrow(_query(["Analog.A"], *window, retrieval_mode="Interpolated"))
    with pytest.raises(ValueError, match="batch_rows"):
        emulator.query_arrow(_query(["Analog.A"], *window), batch_rows=0)


def test_query_arrow_answers_the_pipelines_reads_only(tmp_path: Path) -> None:
    """Delta and an inclusive start are `query`'s (the TDS front's): the pipeline copies in Full
    with an exclusive start, and its emulator client refuses any other mode."""
    from ww_assets.historian import EmulatorHistorian

    emulator = _emulator(tmp_path, [_point("Analog.A", _utc(2025, 6, 1, 10), 1.0)])
    window = (datetime(2025, 6, 1), datetime(2025, 6, 2))
    with pytest.raises(ValueError, match="Delta retrieval is answered by query"):
        emulator.query_arrow(_query(["Analog.A"], *window, retrieval_mode="Delta"))
    with pytest.raises(ValueError, match="inclusive start is answered by query"):
        emulator.query_arrow(_query(["Analog.A"], *window, start_inclusive=True))
    with pytest.raises(ValueError, match="not Delta"):
        EmulatorHistorian(tmp_path / "historian.sqlite", (1,), retrieval_mode="Delta")


def test_the_emulator_counts_what_it_returns(tmp_path: Path) -> None:
    """As the historian's `COUNT(*)`: the row-count check and the reconciliation compare it
    with what the copy read. The expected points are the stored ones, read here from SQLite,
    not from the emulator."""
    from collections import Counter

    from ww_assets.historian import EmulatorHistorian
    from ww_assets_tests.plant_fixtures import build_trap_plant, stored_points

    path = tmp_path / "historian.sqlite"
    build_trap_plant(path)
    day = datetime(2025, 11, 1).date()
    start = _utc(2025, 11, 1)
    tags = ["Tank.Level", "Kühlwasser Pumpe.Status", "Reactor01.Temperature", "No.Such.Tag",
            "Operator's;--Note"]
    historian = EmulatorHistorian(path, (1, 2, 3))
    read = [
        (row["TagName"], row["DateTime"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3])
        for batch in historian.read_history(tags, start, start + timedelta(days=1))
        for row in batch.to_pylist()
    ]
    expected = stored_points(path, tags, day, day)
    assert read == [(p[0], p[1]) for p in expected]
    counts = historian.count_points(tags, start, start + timedelta(days=1))
    by_tag = Counter(p[0] for p in expected)
    assert counts == {tag: by_tag[tag] for tag in tags}
    assert counts["No.Such.Tag"] == 0
