"""wonderware/history_1min: one UTC day, per tag and minute, equal to an independent
computation from the historian's stored points; exact and idempotent."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import date, timedelta

import dagster as dg
import pytest

from ww_assets.history_store import ROLLUP_TABLE, ensure_rollup_schema
from ww_assets.wonderware.rollup_gate import gate_message
from ww_assets.wonderware.verdicts import PartitionVerdict
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import COPIED_TAGS, DAYS, build_trap_plant


def expected_rollup(path: object, day: date) -> list[tuple]:
    """The rollup computed in Python from the emulator's SQLite points."""
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute(
            f"SELECT TagName, DateTime, Value, Quality FROM Points WHERE TagName IN "
            f"({','.join('?' * len(COPIED_TAGS))}) AND DateTime >= ? AND DateTime < ? "
            "ORDER BY TagName, DateTime",
            [*COPIED_TAGS, f"{day} 00:00:00.000", f"{day + timedelta(days=1)} 00:00:00.000"],
        ).fetchall()
    finally:
        conn.close()
    minutes: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for tag, stamp, value, quality in rows:
        minutes[(tag, stamp[:16] + ":00")].append((value, quality))
    result = []
    for (tag, minute), points in sorted(minutes.items()):
        values = [v for v, _ in points if v is not None]
        qualities = [q for _, q in points]
        result.append((
            tag, minute,
            values[0] if values else None,
            round(sum(values) / len(values), 9) if values else None,
            min(values) if values else None,
            max(values) if values else None,
            len(points),
            round(sum(qualities) / len(qualities), 9),
            min(qualities),
        ))
    return result


def actual_rollup(p: Pipeline, day: date) -> list[tuple]:
    with p.warehouse.connect() as conn:
        ensure_rollup_schema(conn, "wonderware")
        table = conn.query(
            "SELECT TagName, toString(minute_timestamp) AS minute, first_value, avg_value, "
            f"min_value, max_value, count, avg_quality, min_quality FROM wonderware.{ROLLUP_TABLE} "
            "WHERE toDate(minute_timestamp) = {d:Date} ORDER BY TagName, minute",
            {"d": day},
        )
    return [
        (r["TagName"], r["minute"], r["first_value"],
         round(r["avg_value"], 9) if r["avg_value"] is not None else None,
         r["min_value"], r["max_value"], r["count"], round(r["avg_quality"], 9), r["min_quality"])
        for r in table.to_pylist()
    ]


@pytest.fixture
def loaded(pipeline: Pipeline) -> Pipeline:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    chunks = pipeline.chunks()
    assert pipeline.materialize_history(f"{chunks[0]}|{DAYS[1]}", f"{chunks[-1]}|{DAYS[2]}").success
    return pipeline


def test_rollup_of_a_day_equals_an_independent_computation(loaded: Pipeline) -> None:
    day = DAYS[2]  # the DST day, with NULL gap markers, strings and repeats
    assert loaded.materialize_rollup(day).success
    expected = expected_rollup(loaded.settings.historian_sqlite, day)
    assert len(expected) > 100
    assert actual_rollup(loaded, day) == expected
    # idempotent and exact: a rerun after a reload leaves the same minutes, nothing doubled
    chunk = loaded.chunks()[0]
    assert loaded.materialize_history(f"{chunk}|{day}").success
    assert loaded.materialize_rollup(day).success
    assert actual_rollup(loaded, day) == expected
    assert actual_rollup(loaded, DAYS[1]) == []  # only its day


def test_rollup_does_not_run_for_a_day_that_is_not_loaded(loaded: Pipeline) -> None:
    result = loaded.materialize_rollup(DAYS[0])
    assert not result.success
    message = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert f"chunk-0001|{DAYS[0]}: not loaded" in message
    assert actual_rollup(loaded, DAYS[0]) == []


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (PartitionVerdict("c|d", True, True, [], [], ["history_quality_good_ratio"]), None),
        (PartitionVerdict("c|d", False, False, [], [], []), "c|d: not loaded"),
        (PartitionVerdict("c|d", True, False, ["history_no_duplicate_keys"], [], []),
         "c|d: failed history_no_duplicate_keys"),
        (PartitionVerdict("c|d", True, False, [], ["history_rowcount_matches_source"], []),
         "c|d: not verified since its latest load (history_rowcount_matches_source)"),
    ],
)
def test_gate_message_names_partitions_and_checks(verdict: PartitionVerdict, expected: str | None) -> None:
    message = gate_message(date(2025, 11, 1), [verdict])
    assert (message is None) if expected is None else (expected in (message or ""))


def test_a_rollup_that_waited_for_the_session_replaces_the_one_it_waited_for(
    loaded: Pipeline,
) -> None:
    """Two rollups of one day at once, one waiting for embedded ClickHouse's lock: it takes
    its load id once the session is its own, so the day's minutes are there once each."""
    from threading import Thread

    from ww_assets.rollup_sql import replace_rollup_day
    from ww_assets.warehouse import HeldSessions
    from ww_assets_tests.services.processes import wait_for

    day, store = DAYS[2], loaded.warehouse
    done: list[object] = []
    with HeldSessions(store, hold_s=60) as held:
        with held.connect():
            pass  # a run's session, held open
        stamp = store.wait_stamp()
        waiting = Thread(target=lambda: done.append(replace_rollup_day(store, day)))
        waiting.start()
        wait_for("the second rollup to wait for the session",
                 lambda: store.wait_stamp() != stamp, timeout_s=60, interval_s=0.02)  # fmt: skip
        done.append(replace_rollup_day(held, day))
    waiting.join(timeout=120)
    assert len(done) == 2
    assert actual_rollup(loaded, day) == expected_rollup(loaded.settings.historian_sqlite, day)


def _rollup_tick(p: Pipeline, cursor: str | None) -> dg.SensorResult:
    sensor = p.defs.resolve_sensor_def("history_rollup_sensor")
    return sensor.evaluate_tick(dg.build_sensor_context(instance=p.instance, definitions=p.defs,
                                                        cursor=cursor))  # fmt: skip


def test_the_rollup_follows_every_verified_reload_of_its_day(loaded: Pipeline) -> None:
    """The sensor asks for a day's rollup once every chunk of the day is loaded and verified:
    after the first loads, after a reload of one chunk (the nightly refresh, a repair), and
    not for a day with a chunk not loaded, until that chunk is loaded."""
    first = _rollup_tick(loaded, None)
    assert sorted(r.partition_key for r in first.run_requests) == [str(DAYS[1]), str(DAYS[2])]
    assert _rollup_tick(loaded, first.cursor).run_requests == []  # nothing new

    chunks = loaded.chunks()
    assert loaded.materialize_history(f"{chunks[0]}|{DAYS[2]}").success  # one chunk reloaded
    again = _rollup_tick(loaded, first.cursor)
    assert [r.partition_key for r in again.run_requests] == [str(DAYS[2])]
    assert again.run_requests[0].run_key not in {r.run_key for r in first.run_requests}

    assert loaded.materialize_history(f"{chunks[0]}|{DAYS[0]}").success  # one chunk of two
    partial = _rollup_tick(loaded, again.cursor)
    assert partial.run_requests == []
    assert loaded.materialize_history(f"{chunks[1]}|{DAYS[0]}").success
    whole = _rollup_tick(loaded, partial.cursor)
    assert [r.partition_key for r in whole.run_requests] == [str(DAYS[0])]

    job = loaded.defs.resolve_job_def("wonderware_rollup_job")
    assert job.execute_in_process(instance=loaded.instance, partition_key=str(DAYS[0])).success
    assert actual_rollup(loaded, DAYS[0]) == expected_rollup(loaded.settings.historian_sqlite, DAYS[0])
