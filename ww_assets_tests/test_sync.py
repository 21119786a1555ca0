"""The incremental sync: per-tag watermarks, lookback, overlap with daily partitions, triggers."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import dagster as dg
import pytest

from ww_assets.emulator import store
from ww_assets.sync_plan import plan_sync, recount_buckets
from ww_assets.tag_cache import CACHE_KEY
from ww_assets.wonderware.keys import SYNC_KEY, SYNC_RUN_TAG
from ww_assets.wonderware.run_requests import refresh_request
from ww_assets_tests.conftest import Pipeline, RedisServer

UTC = timezone.utc
TAGS = [
    store.TagDef("Fast.Flow", 1, "every 20 s", 0, 100, "m3/h"),
    store.TagDef("Slow.Setpoint", 1, "changed hours ago", 0, 100, "%"),
    store.TagDef("Pump's;--State", 2, "discrete"),
    store.TagDef("Kühl.Text", 3, "string"),
]
NAMES = sorted(t.name for t in TAGS)


# ---------------------------------------------------------------- pure planning


def test_plan_reads_each_tag_from_its_own_watermark_and_a_slow_tag_alone() -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    marks = {"a": now - timedelta(seconds=61), "a2": now - timedelta(seconds=62),
             "b": now - timedelta(hours=5)}  # fmt: skip
    reads = plan_sync(
        ["a", "a2", "b", "c"], marks, now=now, safety_margin=timedelta(seconds=5),
        fallback_start=now - timedelta(hours=1), horizon=now - timedelta(days=2),
    )  # fmt: skip
    slow, fallback, current = reads
    assert slow.tags == ("b",) and slow.start == marks["b"] + timedelta(milliseconds=1)
    assert fallback.tags == ("c",) and fallback.start == now - timedelta(hours=1)
    # close watermarks share a read; each tag keeps only what lies after its own
    assert current.tags == ("a2", "a") and current.after == (marks["a2"], marks["a"])
    assert current.start == marks["a2"] + timedelta(milliseconds=1)
    assert {r.end for r in reads} == {now - timedelta(seconds=5)}


def test_plan_bounds_what_a_shared_read_reads_again_and_its_size() -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    end = now
    marks = {f"t{i:04d}": now - timedelta(seconds=60 + i % 120) for i in range(1_500)}
    reads = plan_sync(list(marks), marks, now=now, safety_margin=timedelta(0),
                      fallback_start=now, horizon=now - timedelta(days=2), max_tags=500)  # fmt: skip
    assert sorted(t for r in reads for t in r.tags) == sorted(marks)
    assert all(len(r.tags) <= 500 for r in reads) and len(reads) <= 3 + 5
    for read in reads:
        for mark in read.after:
            assert mark - read.after[0] <= 0.2 * (end - mark)


def test_plan_reads_from_the_last_sync_and_sweeps_silent_tags_from_their_own() -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    last = now - timedelta(seconds=65)
    marks = {"fast": last - timedelta(seconds=1), "slow": last - timedelta(minutes=10),
             "silent": now - timedelta(hours=3)}  # fmt: skip
    plan = partial(plan_sync, list(marks), marks, now=now, safety_margin=timedelta(seconds=5),
                   fallback_start=now, horizon=now - timedelta(days=1), read_until=last)  # fmt: skip
    (current,) = plan(sweep=False)
    assert current.tags == ("fast", "silent", "slow") and current.start == last
    assert current.after == (last - timedelta(milliseconds=1),) * 3
    swept, current = plan(sweep=True)
    assert swept.tags == ("silent",) and swept.end == last  # silent for longer than 15 min
    assert swept.start == marks["silent"] + timedelta(milliseconds=1)
    assert current.start == last and current.end == now - timedelta(seconds=5)


def test_plan_never_starts_before_the_horizon() -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    horizon = now - timedelta(days=1)
    (read,) = plan_sync(
        ["x"], {"x": now - timedelta(days=30)}, now=now,
        safety_margin=timedelta(0), fallback_start=now, horizon=horizon,
    )  # fmt: skip
    assert read.start == horizon


def test_recount_buckets_are_aligned_quarter_hours_ending_at_the_end() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    since = datetime(2025, 11, 3, 10, 7, tzinfo=UTC)
    end = datetime(2025, 11, 3, 10, 40, 30, tzinfo=UTC)
    buckets = recount_buckets(since, end, timedelta(minutes=15), epoch)
    assert [b[0].strftime("%H:%M") for b in buckets] == ["10:00", "10:15", "10:30"]
    assert buckets[-1][1] == end


# ---------------------------------------------------------------- with real parts


def _points(start: datetime, end: datetime, tag: str, every_s: int, value0: float = 0.0):
    moment, i = start, 0
    while moment < end:
        value = value0 + (i % 7)
        yield (tag, moment, value, repr(value), 0, 192, 192)
        moment += timedelta(seconds=every_s, milliseconds=37)
        i += 1


def _add(path: Path, rows) -> None:
    conn = store.connect(path)
    store.add_points(conn, list(rows))
    conn.close()


def _plant(path: Path, now: datetime) -> None:
    conn = store.connect(path)
    store.add_tags(conn, TAGS)
    conn.close()
    start = now - timedelta(hours=6)
    _add(path, _points(start, now - timedelta(seconds=30), "Fast.Flow", 20))
    _add(path, _points(start, now - timedelta(hours=3), "Slow.Setpoint", 600, 50.0))
    _add(path, _points(start, now - timedelta(seconds=30), "Pump's;--State", 300))
    _add(path, [("Kühl.Text", now - timedelta(minutes=m), None, f"msg {m}", 0, 192, 192)
                for m in (200, 100, 10)])


def _sync(p: Pipeline) -> dg.ExecuteInProcessResult:
    job = p.defs.resolve_job_def("wonderware_sync_job")
    return job.execute_in_process(instance=p.instance, raise_on_error=False)


def _exact_since(p: Pipeline, since: datetime, until: datetime) -> int:
    """ClickHouse equals the stored points in [since, until); returns the row count."""
    from ww_assets_tests.plant_fixtures import (
        stored_points_between,
        warehouse_points_between,
    )

    expected = stored_points_between(p.settings.historian_sqlite, NAMES, since, until)
    actual = warehouse_points_between(p.warehouse, NAMES, since, until)
    assert actual == expected
    return len(actual)


@pytest.fixture
def synced(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK", str(8 * 3600))
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_LOOKBACK", "600")
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN", "0")
    pipeline.reload()
    now = datetime.now(UTC)
    _plant(pipeline.settings.historian_sqlite, now)
    assert pipeline.materialize_tags().success
    return pipeline


def test_first_sync_loads_the_initial_lookback_and_says_so(synced: Pipeline) -> None:
    result = _sync(synced)
    assert result.success
    now = datetime.now(UTC)
    assert _exact_since(synced, now - timedelta(hours=7), now) > 1000
    messages = [e.message for e in synced.instance.all_logs(result.run_id)]
    assert any("first sync on an empty table: starting 28800 s ago" in m for m in messages)
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert 0 <= metadata["lag_seconds"].value < 120
    assert metadata["tags_with_new_points"].value == 4


def test_new_late_and_slow_points_arrive_with_the_next_sync_or_its_recount(
    synced: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _sync(synced)
    assert first.success
    now = datetime.now(UTC)
    path = synced.settings.historian_sqlite
    # new points after the last sync's reads (older ones would be late: the recount's)
    read_until = datetime.fromisoformat(
        first.get_asset_materialization_events()[0].materialization.metadata["read_until"].value
    )
    _add(path, _points(read_until + timedelta(milliseconds=1), now, "Fast.Flow", 1, 9.0))
    # a late point inside the lookback, behind the newest point
    late = ("Pump's;--State", now - timedelta(minutes=8, milliseconds=3), 1.0, "1.0", 0, 192, 192)
    _add(path, [late])
    # store-and-forward: the slow tag's points from hours ago arrive only now
    _add(path, _points(now - timedelta(hours=2, minutes=59), now - timedelta(hours=1), "Slow.Setpoint", 300, 70.0))
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_SWEEP_INTERVAL", "0")
    synced.reload()
    result = _sync(synced)  # no recount due yet (WONDERWARE_PIPELINE_SYNC_RECOUNT_INTERVAL)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["tags_with_new_points"].value >= 2  # Fast.Flow and Slow.Setpoint
    assert not metadata["recounted"].value and metadata["swept"].value
    # the burst lies after its silent tag's watermark: the sweep brings it; the new points
    # come from where the last sync stopped; nothing is read twice
    assert metadata["historian_read_rows"].value == metadata["rows"].value
    with pytest.raises(AssertionError):  # the point behind a newer one is not read...
        _exact_since(synced, now - timedelta(hours=7), datetime.now(UTC))

    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_RECOUNT_INTERVAL", "0")
    synced.reload()
    result = _sync(synced)  # ...until the recount: counts differ for one tag and quarter hour
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["recounted"].value
    repaired = metadata["recount_repaired"].value
    assert len(repaired) == 1 and repaired[0].startswith("Pump's;--State ")
    assert metadata["historian_count_queries"].value >= 1
    assert _exact_since(synced, now - timedelta(hours=7), datetime.now(UTC)) > 1000


def test_a_silent_tag_that_wakes_up_brings_its_store_and_forward_burst_without_a_sweep(
    synced: Pipeline,
) -> None:
    first = _sync(synced)
    assert first.success
    read_until = datetime.fromisoformat(
        first.get_asset_materialization_events()[0].materialization.metadata["read_until"].value
    )
    now = datetime.now(UTC)
    # the remote site reconnects: its buffered hours and its live points arrive together
    _add(synced.settings.historian_sqlite,
         _points(now - timedelta(hours=2, minutes=59), now, "Slow.Setpoint", 300, 70.0))
    _add(synced.settings.historian_sqlite,
         [("Slow.Setpoint", read_until + timedelta(milliseconds=5), 1.0, "1.0", 0, 192, 192)])
    result = _sync(synced)  # the next sweep is minutes away (WONDERWARE_PIPELINE_SYNC_SWEEP_INTERVAL)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert not metadata["swept"].value
    assert metadata["historian_read_rows"].value == metadata["rows"].value > 30
    assert _exact_since(synced, now - timedelta(hours=7), datetime.now(UTC)) > 1000


def test_sync_then_backfill_and_backfill_then_sync_stay_exact(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK", str(40 * 3600))
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN", "0")
    pipeline.reload()
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    conn = store.connect(pipeline.settings.historian_sqlite)
    store.add_tags(conn, TAGS)
    conn.close()
    for tag in NAMES:
        _add(pipeline.settings.historian_sqlite, _points(yesterday + timedelta(hours=18), now, tag, 60))
    assert pipeline.materialize_tags().success
    key = f"chunk-0001|{yesterday.date()}"

    assert _sync(pipeline).success  # covers yesterday evening and today
    assert pipeline.materialize_history(key).success
    first = _exact_since(pipeline, yesterday, now)

    assert pipeline.materialize_history(key).success
    assert _sync(pipeline).success  # again, in the other order
    assert _exact_since(pipeline, yesterday, now) == first
    assert first == 4 * len(list(_points(yesterday + timedelta(hours=18), now, "x", 60)))


def test_sync_uses_and_fills_the_redis_cache(
    synced: Pipeline, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    synced.reload()
    client = redis.Redis.from_url(redis_server.url)
    assert _sync(synced).success
    assert client.ttl(CACHE_KEY) > 0
    # between catalog refreshes the cached list rules: a tag missing from it is not synced
    client.setex(CACHE_KEY, 60, '["Fast.Flow"]')
    now = datetime.now(UTC)  # after the last sync's reads: these points are new
    _add(synced.settings.historian_sqlite,
         [("Pump's;--State", now, 5.0, "5.0", 0, 192, 192),
          ("Fast.Flow", now, 5.0, "5.0", 0, 192, 192)])
    result = _sync(synced)
    assert result.success
    from ww_assets_tests.plant_fixtures import warehouse_points_between

    loaded = warehouse_points_between(synced.warehouse, NAMES, now, now + timedelta(seconds=1))
    assert [r[0] for r in loaded] == ["Fast.Flow"]


def test_sync_succeeds_with_redis_stopped_and_warns_once(
    synced: Pipeline, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    synced.reload()
    redis_server.stop()
    result = _sync(synced)
    assert result.success
    warnings = [e for e in synced.instance.all_logs(result.run_id)
                if "working without the tag cache" in e.message]
    assert len(warnings) == 1
    now = datetime.now(UTC)
    assert _exact_since(synced, now - timedelta(hours=7), now) > 1000


def test_sensor_requests_a_run_only_when_no_sync_is_queued_or_running(synced: Pipeline) -> None:
    sensor = synced.defs.resolve_sensor_def("history_sync_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60

    def tick():
        return sensor.evaluate_tick(dg.build_sensor_context(instance=synced.instance,
                                                            definitions=synced.defs))

    assert len(tick().run_requests) == 1
    job = synced.defs.resolve_job_def("wonderware_sync_job")
    # (a QUEUED run needs a code-server origin; the daemon test covers queued runs for real)
    for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED):
        run = synced.instance.create_run_for_job(
            job_def=job, status=status, tags={SYNC_RUN_TAG: "true"}
        )
        result = tick()
        assert not result.run_requests
        assert run.run_id in result.skip_message and "queued or running" in result.skip_message
        synced.instance.report_run_canceled(run)
    assert len(tick().run_requests) == 1


def test_schedules_sync_stopped_by_default_and_refresh_recent_days(synced: Pipeline) -> None:
    schedule = synced.defs.resolve_schedule_def("history_sync_schedule")
    assert schedule.cron_schedule == "*/1 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sync_job = synced.defs.resolve_job_def("wonderware_sync_job")
    assert sync_job.tags[SYNC_RUN_TAG] == "true"
    assert sync_job.tags["dagster/max_runtime"] == "300"
    refresh = synced.defs.resolve_schedule_def("history_refresh_schedule")
    assert refresh.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(
        instance=synced.instance,
        scheduled_execution_time=datetime(2025, 11, 4, 0, 15, tzinfo=UTC),
    )
    (request,) = refresh.evaluate_tick(context).run_requests  # the last day: REFRESH_DAYS=1
    assert request.tags["dagster/asset_partition_range_start"] == "chunk-0001|2025-11-03"
    assert request.tags["dagster/asset_partition_range_end"] == "chunk-0001|2025-11-03"
    assert refresh_request([], datetime(2025, 1, 1).date(), 2, date(2024, 1, 1)) is None


def test_the_refresh_never_reaches_before_the_first_partition() -> None:
    """An oldest time inside the refresh's days (a plant set up yesterday): the range starts
    at the first partition, which exists, instead of a day before it."""
    today, chunks = date(2025, 11, 4), ["chunk-0001", "chunk-0002"]
    request = refresh_request(chunks, today, 2, oldest=date(2025, 11, 3))
    assert request is not None
    assert request.tags["dagster/asset_partition_range_start"] == "chunk-0001|2025-11-03"
    assert request.tags["dagster/asset_partition_range_end"] == "chunk-0002|2025-11-03"
    assert refresh_request(chunks, today, 2, oldest=today) is None


def test_sync_asset_is_in_the_code_location(pipeline: Pipeline) -> None:
    assert pipeline.defs.resolve_assets_def(SYNC_KEY).partitions_def is None
