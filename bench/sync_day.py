"""`make bench-sync`: the historian load of a day of operation, and of adding one tag.

1. day: an emulated plant of BENCH_SYNC_TAGS tags (`create_plant`) over one UTC day, plus five
   remote tags that stay silent and send their last two hours in one store-and-forward burst
   every two hours, and late single points behind newer ones (twenty tags every ten minutes,
   1-14 min late). The sync runs a simulated minute apart over the first BENCH_SYNC_HOURS
   hours (the clock is simulated, every historian read and ClickHouse write is real: the
   sync's own planning, reads, appends, sweep of silent tags and hourly recount, through the
   metered client);
   then the nightly refresh of the day (its rowcount check reuses what it read) and the
   reconciliation's count of the day at the one age it counts by default. Reports rows read
   per new row in steady state, rows read and COUNT passes per stored point over the daily
   cycle, historian queries per minute, the sync body's seconds at this size and extrapolated
   to 10,000 tags, and checks that ClickHouse equals the historian for the synced hours.
2. new tag: a plant of BENCH_NEWTAG_MATES sparse tags over BENCH_NEWTAG_DAYS days, then one
   new tag with its own past; the new-tag load runs as the sensor asks for it (one range run of
   every day of its chunk, `ww/tags`), through Dagster, and reports rows read and written per
   row of the new tag.

Prints a readable report, then one JSON line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

UTC = timezone.utc
DAY = datetime(2025, 6, 2, tzinfo=UTC)
SAFETY_MARGIN = timedelta(seconds=5)
REMOTE_TAGS = 5


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw.replace("_", "")) if raw else default
    except ValueError:
        raise SystemExit(f"bench: {name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"bench: {name}={raw!r} must be positive")
    return value


def _diff(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {f: after[k][f] - before[k][f] for f in after[k]} for k in after}


def day_of_operation(root: Path, n_tags: int, hours: int) -> dict[str, Any]:
    from ww_assets.catalog import refresh_catalog
    from ww_assets.config import Settings
    from ww_assets.emulator import plant, store
    from ww_assets.historian import EmulatorHistorian
    from ww_assets.historian_meter import MeteredHistorian
    from ww_assets.history_store import active_tags_by_chunk, ensure_schema, replace_slice
    from ww_assets.reconcile_sql import compare_counts
    from ww_assets.sync_plan import own_watermarks, plan_sync, silent_tags
    from ww_assets.warehouse import ChdbWarehouse, HeldSessions
    from ww_assets.wonderware.resources import WarehouseResource
    from ww_assets.wonderware.sync_steps import append_reads, recount_late_points

    settings = Settings.from_env({})
    path = root / "day" / "historian.sqlite"
    started = time.monotonic()
    plant.create_plant(path, DAY, DAY + timedelta(days=1), n_tags=n_tags)
    remote = [store.TagDef(f"Remote.Site{i}.Flow", 1, "store-and-forward site", 0.0, 100.0, "m3/h")
              for i in range(REMOTE_TAGS)]  # fmt: skip
    conn = store.connect(path)
    store.add_tags(conn, remote)
    conn.close()
    created_s = time.monotonic() - started
    client = MeteredHistorian(EmulatorHistorian(path, settings.tag_types))
    warehouse = ChdbWarehouse(root / "day" / "clickhouse", "wonderware")
    # what the sync's steps write through, as in the asset
    sink = WarehouseResource(chdb_path=str(warehouse.path), database=warehouse.database)
    refresh_catalog(client.list_tags(), warehouse, settings.tag_chunk_size)
    with warehouse.connect() as conn:
        ensure_schema(conn, warehouse.database)
        tags_by_chunk = active_tags_by_chunk(conn, warehouse.database)
    tags = sorted(t for chunk_tags in tags_by_chunk.values() for t in chunk_tags)
    regular = [t for t in tags if not t.startswith("Remote.")]
    rng = random.Random(7)
    late_points = 0

    def inject(now: datetime) -> None:
        nonlocal late_points
        minute = int((now - DAY).total_seconds() // 60)
        rows: list[Any] = []
        if minute % 120 == 0:  # the remote sites' last two hours, at 10 s, arrive at once
            for tag in remote:
                moment = now - timedelta(hours=2) + timedelta(milliseconds=rng.randrange(10_000))
                while moment < now - SAFETY_MARGIN - timedelta(seconds=1):
                    rows.append((tag.name, moment, rng.uniform(0, 100), None, 0, 192, 192))
                    moment += timedelta(seconds=10)
        if minute % 10 == 0:  # late single points behind newer ones, 1-14 min late
            for tag in rng.sample(regular, 20):
                moment = now - timedelta(minutes=rng.uniform(1, 14), microseconds=rng.randrange(1000) * 1000 + 777)
                rows.append((tag, moment, rng.uniform(0, 1), None, 0, 192, 192))
            late_points += 20
        if rows:
            conn = store.connect(path)
            store.add_points(conn, rows)
            conn.close()

    syncs: list[dict[str, Any]] = []
    recounted_until: datetime | None = None
    read_until: datetime | None = None
    swept_until: datetime | None = None
    horizon = DAY - timedelta(days=settings.refresh_days)
    for minute in range(1, hours * 60 + 1):
        now = DAY + timedelta(minutes=minute)
        inject(now)
        before_load = client.load.snapshot()
        began = time.monotonic()
        with sink.held_session():
            marks = sink.tag_watermarks(horizon)
            end = now - SAFETY_MARGIN
            sweep = read_until is None or swept_until is None or (
                (end - swept_until).total_seconds() >= settings.sync_sweep_interval_s)
            reads = plan_sync(tags, marks, now=now, safety_margin=SAFETY_MARGIN,
                              fallback_start=DAY, horizon=horizon, read_until=read_until,
                              sweep=sweep, silent_after=timedelta(seconds=settings.sync_lookback_s),
                              max_tags=settings.sync_tags_per_read)  # fmt: skip
            silent = {} if sweep or read_until is None else silent_tags(
                own_watermarks(tags, marks, DAY, horizon), min(read_until, end),
                timedelta(seconds=settings.sync_lookback_s))  # fmt: skip
            appended = append_reads(client, sink, reads, silent, settings.sync_tags_per_read)
            read_until = end
            swept_until = end if sweep else swept_until
            repaired = 0
            if recounted_until is None:
                recounted_until = end
            elif (end - recounted_until).total_seconds() >= settings.sync_recount_interval_s:
                since = max(recounted_until - timedelta(seconds=settings.sync_lookback_s), horizon)
                outcome = recount_late_points(client, sink, tags, since, end, settings.sync_tags_per_read)
                repaired = outcome.stats.rows
                recounted_until = end
        load = _diff(client.load.snapshot(), before_load)
        syncs.append({"minute": minute, "seconds": time.monotonic() - began, "reads": len(reads),
                      "new_rows": appended.rows, "repaired_rows": repaired, "load": load})  # fmt: skip
    # the next hourly recount, early: late points of the last hour are healed before comparing
    before_load = client.load.snapshot()
    end = DAY + timedelta(hours=hours) - SAFETY_MARGIN
    if recounted_until is not None and recounted_until < end:
        since = max(recounted_until - timedelta(seconds=settings.sync_lookback_s), horizon)
        final = recount_late_points(client, sink, tags, since, end, settings.sync_tags_per_read)
        syncs[-1]["repaired_rows"] += final.stats.rows
        load = _diff(client.load.snapshot(), before_load)
        for kind in load:
            for figure in load[kind]:
                syncs[-1]["load"][kind][figure] += load[kind][figure]
        recounted_until = end
    synced_until = end

    # exact for the synced span: every stored point once, late ones included
    with warehouse.connect() as conn:
        stored = conn.query(
            "SELECT count() AS n, uniqExact(TagName, DateTime) AS k FROM wonderware.WonderwareHistory "
            "WHERE DateTime < {end:DateTime64(3, 'UTC')}", {"end": synced_until.replace(tzinfo=None)},
        ).to_pylist()[0]  # fmt: skip
    recount_end = recounted_until or DAY
    expected = sum(b.num_rows for b in client.client.read_history(tags, horizon, recount_end))
    with warehouse.connect() as conn:
        in_ch = conn.query(
            "SELECT count() AS n FROM wonderware.WonderwareHistory "
            "WHERE DateTime < {end:DateTime64(3, 'UTC')}", {"end": recount_end.replace(tzinfo=None)},
        ).to_pylist()[0]["n"]  # fmt: skip

    # the nightly refresh of the day: every chunk's partition, read once (its check reuses it)
    day_points = sum(client.client.count_points(tags, DAY, DAY + timedelta(days=1)).values())
    before_load = client.load.snapshot()
    began = time.monotonic()
    with HeldSessions(warehouse) as held:
        for chunk in sorted(tags_by_chunk):
            chunk_tags = tags_by_chunk[chunk]
            replace_slice(held, chunk_tags, DAY, DAY + timedelta(days=1),
                          client.read_history(chunk_tags, DAY, DAY + timedelta(days=1)))  # fmt: skip
    refresh = {"seconds": time.monotonic() - began, "load": _diff(client.load.snapshot(), before_load)}
    # the reconciliation, when the day has the age it counts at
    before_load = client.load.snapshot()
    differing = 0
    for chunk in sorted(tags_by_chunk):
        compared = compare_counts(warehouse, client, tags_by_chunk[chunk], [DAY.date()])
        differing += sum(1 for want, have in compared.values() if want != have)
    reconcile = {"load": _diff(client.load.snapshot(), before_load), "differing": differing}

    steady = syncs[1:]
    sync_read = sum(s["load"]["read"]["rows"] for s in syncs)
    sync_new = sum(s["new_rows"] for s in syncs)
    steady_read = sum(s["load"]["read"]["rows"] - s["repaired_rows"] for s in steady)
    steady_new = sum(s["new_rows"] for s in steady)
    sync_counted = sum(s["load"]["count"]["rows"] for s in syncs)
    synced_points = int(stored["n"])
    sync_queries = sum(s["load"]["read"]["queries"] + s["load"]["count"]["queries"] for s in syncs)
    minutes = len(syncs)
    sync_q_per_min = sync_queries / minutes
    chunks = len(tags_by_chunk)
    daily_queries = sync_q_per_min * 1440 + sum(
        part["load"][k]["queries"] for part in (refresh, reconcile) for k in ("read", "count"))
    seconds = sorted(s["seconds"] for s in steady)
    mean_s = sum(seconds) / len(seconds)
    p95_s = seconds[int(0.95 * (len(seconds) - 1))]
    rows_per_point_sync = sync_read / synced_points
    count_per_point_sync = sync_counted / synced_points
    return {
        "tags": len(tags),
        "chunks": chunks,
        "day_points": day_points,
        "plant_created_s": round(created_s, 1),
        "syncs": minutes,
        "synced_points": synced_points,
        "synced_points_unique": int(stored["k"]),
        "late_single_points": late_points,
        "exact_until_last_recount": int(in_ch) == expected,
        "historian_points_until_last_recount": expected,
        "clickhouse_points_until_last_recount": int(in_ch),
        "sync_rows_read_per_new_row_steady": round(steady_read / steady_new, 3) if steady_new else None,
        "sync_rows_read_per_stored_point": round(rows_per_point_sync, 3),
        "sync_count_passes_per_point": round(count_per_point_sync, 3),
        "sync_rows_repaired": sum(s["repaired_rows"] for s in syncs),
        "sync_new_rows": sync_new,
        "sync_queries_per_minute": round(sync_q_per_min, 2),
        "sync_reads_per_sync_max": max(s["reads"] for s in syncs),
        "sync_body_mean_s": round(mean_s, 3),
        "sync_body_p95_s": round(p95_s, 3),
        "sync_body_10k_tags_s_linear": round(p95_s * 10_000 / len(tags), 2),
        "refresh_seconds": round(refresh["seconds"], 1),
        "refresh_rows_read_per_point": round(refresh["load"]["read"]["rows"] / day_points, 3),
        "refresh_count_passes": 0.0,
        "reconcile_count_passes_per_point": round(reconcile["load"]["count"]["rows"] / day_points, 3),
        "reconcile_differing_partitions": differing,
        "daily_rows_read_per_stored_point": round(
            rows_per_point_sync + refresh["load"]["read"]["rows"] / day_points, 3),
        "daily_count_passes_per_chunk_day": round(
            count_per_point_sync + reconcile["load"]["count"]["rows"] / day_points, 3),
        "daily_queries_per_minute": round(daily_queries / 1440, 2),
    }


def new_tag_load(root: Path, mates: int, days: int) -> dict[str, Any]:
    import warnings

    import dagster as dg

    from ww_assets.config import Settings
    from ww_assets.definitions import build_definitions

    warnings.filterwarnings("ignore")
    TAGS = dg.AssetKey(["wonderware", "tags"])
    QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    from ww_assets.emulator import store

    home = root / "newtag"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days)  # the sensor asks for every complete day up to yesterday
    env = {"WW_HOME": str(home), "WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME": f"{first:%Y-%m-%d}",
           "WONDERWARE_PIPELINE_TAG_CHUNK_SIZE": str(mates + 1)}  # fmt: skip
    os.environ.update(env)
    settings = Settings.from_env()
    rng = random.Random(11)
    conn = store.connect(settings.historian_sqlite)
    store.add_tags(conn, [store.TagDef(f"Mate{i:02d}.Level", 1, "sparse", 0, 100, "%") for i in range(mates)])
    for day in range(days):
        start = first + timedelta(days=day)
        store.add_points(conn, [
            (f"Mate{i:02d}.Level", start + timedelta(seconds=600 * k + i), rng.uniform(0, 100), None, 0, 192, 192)
            for i in range(mates) for k in range(144)
        ])  # fmt: skip
    conn.close()
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        tags_job = defs.resolve_implicit_global_asset_job_def()
        assert tags_job.execute_in_process(instance=instance, asset_selection=[TAGS], run_config=QUIET).success
        conn = store.connect(settings.historian_sqlite)
        store.add_tags(conn, [store.TagDef("New.Analyzer", 1, "added later", 0, 10, "ppm")])
        own = 0
        for day in range(days):
            start = first + timedelta(days=day)
            rows = [("New.Analyzer", start + timedelta(seconds=60 * k + 7), rng.uniform(0, 10), None, 0, 192, 192)
                    for k in range(1440)]  # fmt: skip
            own += store.add_points(conn, rows)
        conn.close()
        assert tags_job.execute_in_process(instance=instance, asset_selection=[TAGS], run_config=QUIET).success
        sensor = defs.resolve_sensor_def("new_tag_history_sensor")
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        (request,) = sensor.evaluate_tick(context).run_requests
        job = defs.resolve_job_def("wonderware_history_job")
        began = time.monotonic()
        result = job.execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False, run_config=QUIET
        )
        seconds = time.monotonic() - began
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        checks = result.get_asset_check_evaluations()
    read = metadata["run_historian_read_rows"].value
    written = metadata["run_rows"].value
    return {
        "new_tag_days": days,
        "new_tag_mates": mates,
        "new_tag_partitions": len({e.partition for e in checks}) if checks else days,
        "new_tag_run_succeeded": result.success,
        "new_tag_own_rows": own,
        "new_tag_rows_read_per_own_row": round(read / own, 3),
        "new_tag_rows_written_per_own_row": round(written / own, 3),
        "new_tag_historian_reads": metadata["run_historian_read_queries"].value,
        "new_tag_run_s": round(seconds, 1),
    }


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="wwbench-sync-", dir="/tmp"))
    for name in ("WONDERWARE_HOST", "CLICKHOUSE_HOST", "REDIS_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    try:
        day = day_of_operation(root, _int("BENCH_SYNC_TAGS", 1500), _int("BENCH_SYNC_HOURS", 3))
        print(f"day of operation: {day['tags']} tags in {day['chunks']} chunks, {day['day_points']} points a day")
        print(f"  {day['syncs']} syncs a simulated minute apart: steady state "
              f"{day['sync_rows_read_per_new_row_steady']} rows read per new row, "
              f"{day['sync_queries_per_minute']} historian queries per minute (at most "
              f"{day['sync_reads_per_sync_max']} reads per sync), body mean {day['sync_body_mean_s']} s, "
              f"p95 {day['sync_body_p95_s']} s (10,000 tags, linear: {day['sync_body_10k_tags_s_linear']} s)")
        print(f"  late single points {day['late_single_points']}, repaired rows {day['sync_rows_repaired']}; "
              f"exact up to the last recount: {day['exact_until_last_recount']}")
        print(f"  daily cycle: {day['daily_rows_read_per_stored_point']} rows read and "
              f"{day['daily_count_passes_per_chunk_day']} COUNT passes per stored point, "
              f"{day['daily_queries_per_minute']} queries per minute")
        tag = new_tag_load(root, _int("BENCH_NEWTAG_MATES", 40), _int("BENCH_NEWTAG_DAYS", 730))
        print(f"new tag on a plant of {tag['new_tag_days']} days: run succeeded {tag['new_tag_run_succeeded']} "
              f"in {tag['new_tag_run_s']} s; read {tag['new_tag_rows_read_per_own_row']}× and wrote "
              f"{tag['new_tag_rows_written_per_own_row']}× its own {tag['new_tag_own_rows']} rows "
              f"({tag['new_tag_historian_reads']} historian reads)")
        print(json.dumps({**day, **tag}))
    finally:
        if os.environ.get("BENCH_KEEP", "") in ("", "0"):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
