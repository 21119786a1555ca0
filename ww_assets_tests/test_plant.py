"""The simulated plant: deterministic, awkward, realistic, and growable."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets.emulator import plant, store
from ww_assets.emulator.history import HistorianEmulator
from ww_assets.history_query import HistoryQuery, window_query

UTC = timezone.utc
START = datetime(2025, 10, 31, tzinfo=UTC)
END = START + timedelta(days=1)
N_TAGS = 20


def _dump(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM Points ORDER BY TagName, DateTime").fetchall()
    finally:
        conn.close()


def _sql(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def small_plant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, plant.PlantSummary]:
    path = tmp_path_factory.mktemp("plant") / "historian.sqlite"
    return path, plant.create_plant(path, START, END, n_tags=N_TAGS, seed=7)


def test_summary(small_plant: tuple[Path, plant.PlantSummary]) -> None:
    path, summary = small_plant
    assert summary.tags == N_TAGS + len(plant.SYSTEM_TAGS)
    assert summary.points == len(_dump(path)) > 0
    assert (summary.start, summary.end) == (START, END)
    stamps = _sql(path, "SELECT min(DateTime), max(DateTime) FROM Points")[0]
    assert stamps[0] >= "2025-10-31 00:00:00.000"
    assert stamps[1] < "2025-11-01 00:00:00.000"


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    end = START + timedelta(hours=6)
    plant.create_plant(tmp_path / "a.sqlite", START, end, n_tags=12, seed=3)
    plant.create_plant(tmp_path / "b.sqlite", START, end, n_tags=12, seed=3)
    plant.create_plant(tmp_path / "c.sqlite", START, end, n_tags=12, seed=4)
    assert _dump(tmp_path / "a.sqlite") == _dump(tmp_path / "b.sqlite")
    assert _dump(tmp_path / "a.sqlite") != _dump(tmp_path / "c.sqlite")
    assert plant.default_tags(40, seed=3) == plant.default_tags(40, seed=3)


def test_create_refuses_an_existing_plant(small_plant: tuple[Path, plant.PlantSummary]) -> None:
    path, _ = small_plant
    with pytest.raises(FileExistsError, match="already holds a plant"):
        plant.create_plant(path, START, END, n_tags=N_TAGS)


def test_default_tags_mix_and_awkward_names() -> None:
    tags = plant.default_tags()
    plant_tags = [t for t in tags if t.acquisition_type != store.SYSTEM_DRIVER]
    assert len(plant_tags) == 150
    assert len({t.name for t in tags}) == len(tags)
    share = {kind: sum(t.tag_type == kind for t in plant_tags) / 150 for kind in (1, 2, 3)}
    assert 0.65 <= share[1] <= 0.75
    assert 0.15 <= share[2] <= 0.25
    assert 0.07 <= share[3] <= 0.13
    names = {t.name for t in tags}
    assert "Operator's.Note" in names
    assert any(";" in n for n in names)
    assert any("--" in n for n in names)
    assert any(" " in n for n in names)
    assert any(n.count(".") >= 2 for n in names)
    assert {"Kühlwasser.Temperatur", "Température_ÉCHANGEUR"} <= names
    assert "SysTimeSec" in names
    assert any(t.name == "Reactor01.Temperature" or t.name.startswith("Reactor01.") for t in tags)
    for tag in tags:
        if tag.tag_type == 1:
            assert tag.min_eu is not None and tag.max_eu is not None and tag.min_eu < tag.max_eu
            assert tag.unit


def test_system_tags_stored_but_not_listed(small_plant: tuple[Path, plant.PlantSummary]) -> None:
    path, _ = small_plant
    stored = {r[0] for r in _sql(path, "SELECT DISTINCT TagName FROM Points")}
    assert "SysTimeSec" in stored
    listed = [r[0] for r in HistorianEmulator(path).list_tags((1, 2, 3))]
    assert len(listed) == N_TAGS
    assert not set(listed) & {t.name for t in plant.SYSTEM_TAGS}
    assert "System2.Flow" in listed
    assert {"Operator's.Note", "Kühlwasser.Temperatur"} <= set(listed)


def test_points_look_like_a_plant(small_plant: tuple[Path, plant.PlantSummary]) -> None:
    path, _ = small_plant
    kinds = dict(_sql(path, "SELECT TagName, TagType FROM TagRef"))
    bounds = {r[0]: (r[1], r[2]) for r in _sql(path, "SELECT TagName, MinEU, MaxEU FROM AnalogTag")}
    rows = _dump(path)
    bad = [r for r in rows if r[4] == 1]
    assert bad and all(r[2] is None and r[3] is None and r[6] == 0 for r in bad)
    assert any(r[4] == 16 and r[6] == 64 for r in rows)
    assert sum(not r[1].endswith("000") for r in rows) > len(rows) // 2  # ms, not whole seconds
    for tag, _, value, vvalue, quality, _, _ in rows:
        if quality == 1:
            continue
        if kinds[tag] == 3:
            assert value is None and isinstance(vvalue, str)
        elif kinds[tag] == 2:
            assert value in (0.0, 1.0) and vvalue == f"{value:.0f}"
        else:
            assert float(vvalue) == value
    analog = [(r[0], r[2]) for r in rows if kinds[r[0]] == 1 and r[2] is not None]
    inside = sum(bounds[t][0] <= v <= bounds[t][1] for t, v in analog)
    assert 0.99 <= inside / len(analog) < 1.0 or inside == len(analog)
    per_tag = dict(_sql(path, "SELECT TagName, count(*) FROM Points GROUP BY TagName"))
    assert len(set(per_tag.values())) > 5  # each tag has its own pace


def test_delta_differs_from_full(small_plant: tuple[Path, plant.PlantSummary]) -> None:
    path, _ = small_plant
    emulator = HistorianEmulator(path)
    discrete = tuple(r[0] for r in emulator.list_tags((2, 3)))
    window = (datetime(2025, 10, 31), datetime(2025, 11, 1))

    def count(mode: str) -> int:
        query = HistoryQuery(discrete, *window, retrieval_mode=mode)
        return sum(len(b) for b in emulator.query(query))

    assert count("Delta") < count("Full")


def test_default_size_is_about_a_million_points_for_three_days() -> None:
    # The expected count from each tag's pace, without writing it.
    expected = sum(
        3 * 86_400_000 / plant._model(tag, 7, None).interval_ms for tag in plant.default_tags()
    )
    assert 0.8e6 <= expected <= 1.4e6


def test_extend_appends_after_the_last_point(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    plant.create_plant(path, START, START + timedelta(hours=6), n_tags=10, seed=5)
    before = _dump(path)
    last = dict(_sql(path, "SELECT TagName, max(DateTime) FROM Points GROUP BY TagName"))

    new_end = START + timedelta(hours=12)
    added = plant.extend_plant(path, new_end, seed=5)
    after = _dump(path)
    assert added == len(after) - len(before) > 0
    assert set(before) <= set(after)
    new = set(after) - set(before)
    assert all(row[1] > last[row[0]] for row in new)
    assert all(row[1] < "2025-10-31 12:00:00.000" for row in new)
    extended = {row[0] for row in new}
    assert len(extended) >= len(last) - 2  # a tag may be in a gap
    # Extending again to the same end only appends after each tag's (new) last point.
    last = dict(_sql(path, "SELECT TagName, max(DateTime) FROM Points GROUP BY TagName"))
    plant.extend_plant(path, new_end, seed=5)
    again = set(_dump(path)) - set(after)
    assert all(last[row[0]] < row[1] < "2025-10-31 12:00:00.000" for row in again)

    emulator = HistorianEmulator(path)
    tags = tuple(r[0] for r in emulator.list_tags((1, 2, 3)))
    read = sum(len(b) for b in emulator.query(window_query(tags, START, new_end)))
    stored = sum(emulator.count_points(tags, START, new_end).values())
    assert read == stored


def test_add_tags_adds_new_tags_with_history(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    plant.create_plant(path, START, START + timedelta(hours=6), n_tags=10, seed=5)
    emulator = HistorianEmulator(path)
    old = {r[0] for r in emulator.list_tags((1, 2, 3))}
    old_points = _dump(path)

    summary = plant.add_tags(path, 4, START, START + timedelta(hours=6), seed=5)
    new = {r[0] for r in emulator.list_tags((1, 2, 3))} - old
    assert summary.tags == 4 and set(summary.tag_names) == new and len(new) == 4
    counts = emulator.count_points(sorted(new), START, START + timedelta(hours=6))
    assert all(n > 0 for n in counts.values())
    assert summary.points == sum(counts.values())
    assert set(old_points) <= set(_dump(path))


def test_run_live_appends_points_and_late_bursts(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    now = datetime(2025, 10, 31, 12, tzinfo=UTC)
    plant.create_plant(path, now - timedelta(hours=1), now, n_tags=8, seed=2)
    before = len(_dump(path))
    clock_now = [now.timestamp()]

    def sleep(seconds: float) -> None:
        clock_now[0] += seconds

    stats = plant.run_live(
        path, stop_after_s=300, tick_s=30, late_probability=1.0,
        clock=lambda: clock_now[0], sleep=sleep,
    )  # fmt: skip
    assert stats.ticks == 11
    assert stats.late_bursts == 11 and stats.late_points > 0
    # A late point may land on an existing timestamp and replace it.
    assert before + stats.points <= len(_dump(path)) <= before + stats.points + stats.late_points
    late = _sql(
        path,
        "SELECT count(*) FROM Points WHERE DateTime > ? AND DateTime < ?",
        ("2025-10-31 11:45:00.000", "2025-10-31 12:04:00.000"),
    )[0][0]
    assert late > 0
    newest = _sql(path, "SELECT max(DateTime) FROM Points")[0][0]
    assert "2025-10-31 12:00:00.000" < newest <= "2025-10-31 12:05:00.000"

    once = plant.run_live(path, stop_after_s=0, late_probability=0.0, clock=lambda: clock_now[0])
    assert once.ticks == 1 and once.late_points == 0


def test_run_live_needs_a_plant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="create a plant"):
        plant.run_live(tmp_path / "empty.sqlite", stop_after_s=0)
