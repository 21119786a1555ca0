"""The benchmark's stages, each run in its own process: `python -m bench.stages NAME ARGS_JSON`.

Each prints one JSON object on its last stdout line. A stage reads the shared dataset and
writes to embedded ClickHouse under its own `WW_HOME` (from the environment), so no stage sees
another's tables or caches.
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.perf_counter()
"""Before the imports: the bare copy is timed from here, as a ww run is from its process start."""

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from ww_assets.config import Settings
from ww_assets.historian import EmulatorHistorian, rows_to_batch
from ww_assets.history_query import day_bounds
from ww_assets.history_store import (
    HISTORY_STORE,
    ensure_schema,
    read_active_tags,
    replace_slice,
    with_load_id,
)
from ww_assets.read_ahead import ReadAhead
from ww_assets.schema import COLUMN_NAMES, HISTORY_COLUMNS
from ww_assets.warehouse import ChdbWarehouse

Partition = tuple[str, list[str], datetime, datetime]
"""(chunk, its tags, day start, day end)."""


def _historian(settings: Settings, data: str) -> EmulatorHistorian:
    return EmulatorHistorian(
        Path(data),
        tag_types=settings.tag_types,
        retrieval_mode=settings.retrieval_mode,
        server_timezone=settings.emulator_timezone,
        batch_rows=settings.batch_rows,
    )


def _warehouse(settings: Settings) -> ChdbWarehouse:
    return ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)


def plan(data: str) -> dict[str, list[str]]:
    """The tag chunks that `wonderware/tags` assigns to the dataset's tags (chunk -> tags), from
    a catalog in this stage's own warehouse: the other stages copy these chunks."""
    from ww_assets.catalog import refresh_catalog

    settings = Settings.from_env()
    store = _warehouse(settings)
    refresh_catalog(_historian(settings, data).list_tags(), store, settings.tag_chunk_size)
    return read_active_tags(store)


def _partitions(chunks: dict[str, list[str]], first_day: str, days: int) -> list[Partition]:
    first = date.fromisoformat(first_day)
    return [
        (chunk, tags, *day_bounds(first + timedelta(days=d)))
        for chunk, tags in sorted(chunks.items())
        for d in range(days)
    ]


def _driver_reads(
    settings: Settings, data: str, parts: list[Partition]
) -> Iterator[tuple[list[str], datetime, datetime, Iterator[list[tuple]]]]:
    """Per partition: its tags, window, and the emulator's pymssql-shaped row batches (the
    driver stand-in of the row path and of the cost stage)."""
    from ww_assets.emulator.history import HistorianEmulator
    from ww_assets.history_query import window_query

    emulator = HistorianEmulator(Path(data), server_timezone=settings.emulator_timezone)
    for _, tags, start, end in parts:
        query = window_query(tuple(tags), start, end, settings.retrieval_mode)
        yield tags, start, end, iter(emulator.query(query, batch_rows=settings.batch_rows))


def _count(store: ChdbWarehouse) -> int:
    with store.connect() as conn:
        table = conn.query(f"SELECT count() AS n FROM {store.database}.{HISTORY_STORE}")
    return int(table.column("n")[0].as_py())


# ---------------------------------------------------------------- bare copy


def bare(data: str, first_day: str, days: int, chunks: dict[str, list[str]]) -> dict[str, Any]:
    """The same historian reads and ClickHouse inserts, as a minimal script: one warehouse
    session for the whole copy, the reads fetched ahead of the inserts as the pipeline does
    (`ReadAhead`, here across partition boundaries too), streamed into the pipeline's inserts
    (`insert_stream`, with a `LoadId` column); no clip, no delete, no Dagster. `seconds` runs
    from the process start (interpreter and imports included, as in a ww run) to the last
    insert; `copy_s` is the copy alone."""
    settings = Settings.from_env()
    parts = _partitions(chunks, first_day, days)
    historian, store = _historian(settings, data), _warehouse(settings)
    rows = 0
    started = time.perf_counter()
    with store.connect() as conn:
        ensure_schema(conn, store.database)
        read = ReadAhead(batch for _, tags, start, end in parts
                          for batch in historian.read_history(tags, start, end))
        tables = _loaded(read)
        while inserted := conn.insert_stream(f"{store.database}.{HISTORY_STORE}", tables):
            rows += inserted
    ended = time.perf_counter()
    return {"rows": rows, "seconds": ended - PROCESS_STARTED, "copy_s": ended - started,
            "cpu_s": time.process_time(), "stored": _count(store)}


def _loaded(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """`batches` as the tables the pipeline inserts: with a (constant) `LoadId` column."""
    return (with_load_id(pa.Table.from_batches([batch]), 1) for batch in batches)


# ---------------------------------------------------------------- row path


def _row_model() -> type:
    """The replaced system's row model: a pydantic model of the 33 columns, all optional,
    validated field by field (one object per row)."""
    import pydantic

    python_types: dict[str, Any] = {}
    for column in HISTORY_COLUMNS:
        kind = column.arrow_type
        if pa.types.is_timestamp(kind):
            python_types[column.name] = Optional[datetime]
        elif pa.types.is_floating(kind):
            python_types[column.name] = Optional[float]
        elif pa.types.is_integer(kind):
            python_types[column.name] = Optional[int]
        else:
            python_types[column.name] = Optional[str]
    fields = {name: (kind, None) for name, kind in python_types.items()}
    return pydantic.create_model("WonderwareHistoryRow", **fields)  # type: ignore[call-overload]


def row_path(
    data: str, first_day: str, days: int, chunks: dict[str, list[str]], max_rows: int
) -> dict[str, Any]:
    """The replaced system's approach: the driver's rows as dicts (pymssql `as_dict=True`),
    one pydantic model object per row, then Moose's `OlapTable.insert` of the models as it is
    written (moose_lib `dmv2/olap_table.py`: `model_dump()`, a copy of each dict,
    `json.dumps(row, default=str)` per row, `INSERT ... FORMAT JSONEachRow` with
    `date_time_input_format = 'best_effort'`). The JSON body reaches chDB as a file, as a
    server reads an HTTP request body (putting it into the query text costs chDB ~5 µs/row
    more, which would not be the replaced system's cost)."""
    settings = Settings.from_env()
    parts = _partitions(chunks, first_day, days)
    store = _warehouse(settings)
    model, names = _row_model(), COLUMN_NAMES
    body_path = settings.home / "row_path_body.json"
    rows = 0
    started, cpu = time.perf_counter(), time.process_time()
    with store.connect() as conn:
        ensure_schema(conn, store.database)
    for _, _, _, batches in _driver_reads(settings, data, parts):
        if rows >= max_rows:
            break
        for fetched in batches:
            if rows >= max_rows:
                break
            records = [dict(zip(names, row)) for row in fetched]  # pymssql as_dict=True
            models = [model(**record) for record in records]
            dumped = [dict(m.model_dump()) for m in models]
            body_path.write_bytes("\n".join(json.dumps(r, default=str) for r in dumped).encode())
            with store.connect() as conn:
                conn.command(
                    f"INSERT INTO {store.database}.{HISTORY_STORE} FROM INFILE '{body_path}' "
                    "SETTINGS date_time_input_format = 'best_effort' FORMAT JSONEachRow"
                )
            rows += len(models)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": rows, "seconds": seconds, "cpu_s": cpu, "stored": _count(store)}


# ---------------------------------------------------------------- peak RSS of one partition


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss(data: str, first_day: str, tags: list[str]) -> dict[str, Any]:
    """One partition's copy as the asset makes it (`replace_slice(ReadAhead(read_history(...)))`,
    the configured batch sizes); peak RSS of this process (which did nothing else)."""
    settings = Settings.from_env()
    historian, store = _historian(settings, data), _warehouse(settings)
    with store.connect() as conn:
        ensure_schema(conn, store.database)
    start = datetime.combine(date.fromisoformat(first_day), datetime.min.time(), timezone.utc)
    end = start + timedelta(days=1)
    before = _rss_mb()
    started = time.perf_counter()
    with ReadAhead(historian.read_history(tags, start, end)) as batches:
        stats = replace_slice(store, tags, start, end, batches)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": stats.rows, "seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak}


def pymssql_read(data: str, first_day: str, tags: list[str]) -> dict[str, Any]:
    """One day of `tags` read through `SqlServerHistorian` (pymssql over TDS) from
    `ww simulate serve` in a process of its own, so this process's CPU time is the client's
    alone: pymssql decoding the wire and the rows' conversion to Arrow. Peak RSS of this
    process, which did nothing else."""
    import socket
    import subprocess

    from ww_assets.historian import SqlServerHistorian

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WW_HOME": str(Path(data).parent), "WONDERWARE_USERNAME": "bench",
           "WONDERWARE_PASSWORD": "bench"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "ww_assets.cli", "simulate", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("bench: ww simulate serve did not start") from None
                time.sleep(0.1)
        settings = Settings.from_env()
        client = SqlServerHistorian("127.0.0.1", port, "Runtime", "bench", "bench",
                                    settings.tag_types, batch_rows=settings.batch_rows)  # fmt: skip
        start = datetime.combine(date.fromisoformat(first_day), datetime.min.time(), timezone.utc)
        before = _rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        rows = sum(batch.num_rows for batch in client.read_history(tags, start, start + timedelta(days=1)))
        cpu, seconds = time.process_time() - cpu, time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "seconds": seconds, "cpu_s": cpu, "rss_before_mb": before,
            "peak_rss_mb": peak}  # fmt: skip


# ---------------------------------------------------------------- CPU cost per row after the driver


class _TimedWarehouse:
    """A warehouse whose sessions' statements (inserts, and the final check for older loads)
    add their CPU time to `spent["insert"]`; opening and closing a session counts too."""

    def __init__(self, inner: ChdbWarehouse, spent: dict[str, float]) -> None:
        self.inner, self.spent, self.database = inner, spent, inner.database

    def describe(self) -> str:
        return self.inner.describe()

    @contextmanager
    def connect(self) -> Iterator[Any]:
        t0 = time.process_time()
        with self.inner.connect() as conn:
            self.spent["insert"] += time.process_time() - t0
            yield _TimedConnection(conn, self.spent)
            t0 = time.process_time()
        self.spent["insert"] += time.process_time() - t0


class _TimedConnection:
    def __init__(self, inner: Any, spent: dict[str, float]) -> None:
        self.inner, self.spent = inner, spent

    def insert_stream(self, table: str, tables: Iterator[pa.Table], rows: Optional[int] = None) -> int:
        """The insert's CPU time, without that of pulling `tables` (the clip, timed by the
        thread that pulls, which is chDB's own)."""
        pulled = 0.0

        def timed_tables() -> Iterator[pa.Table]:
            nonlocal pulled
            while True:
                t0 = time.thread_time()
                item = next(tables, None)
                pulled += time.thread_time() - t0
                if item is None:
                    return
                yield item

        t0 = time.process_time()
        try:
            return self.inner.insert_stream(table, timed_tables(), rows)
        finally:
            self.spent["insert"] += time.process_time() - t0 - pulled

    def __getattr__(self, verb: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return getattr(self.inner, verb)(*args, **kwargs)
            finally:
                self.spent["insert"] += time.process_time() - t0

        return timed


def cost(
    data: str, first_day: str, days: int, chunks: dict[str, list[str]], max_rows: int
) -> dict[str, Any]:
    """CPU time per row of each step of `replace_slice(read_history(...))` (process CPU time,
    so chDB's own threads count), streamed as in the pipeline: the driver stand-in (the
    emulator's `query`), the Arrow conversion (`rows_to_batch`), the warehouse sessions
    (inserts and the final check for older loads), and the rest of `replace_slice` (clip and
    accounting). The driver and the conversion are timed by the thread that pulls them (chDB's
    own, while it inserts), the rest by the process's CPU time."""
    settings = Settings.from_env()
    parts = _partitions(chunks, first_day, days)
    spent = {"driver": 0.0, "convert": 0.0, "insert": 0.0, "clip": 0.0}
    store = _TimedWarehouse(_warehouse(settings), spent)
    with store.inner.connect() as conn:
        ensure_schema(conn, store.database)
    # The driver and the conversion run in whichever thread pulls them (chDB's, mostly).
    clock = time.thread_time
    rows = 0

    def converted(batches: Iterator[list[tuple]]) -> Iterator[pa.RecordBatch]:
        nonlocal rows
        while True:
            t0 = clock()
            fetched = next(batches, None)
            t1 = clock()
            spent["driver"] += t1 - t0
            if fetched is None:
                return
            batch = rows_to_batch(fetched)
            spent["convert"] += clock() - t1
            rows += len(fetched)
            yield batch

    total = 0.0
    for tags, start, end, batches in _driver_reads(settings, data, parts):
        if rows >= max_rows:
            break
        t0 = time.process_time()
        replace_slice(store, tags, start, end, converted(batches))
        total += time.process_time() - t0
    spent["clip"] = total - spent["driver"] - spent["convert"] - spent["insert"]
    per_row = {k: v / rows * 1e6 for k, v in spent.items()} if rows else {}
    server = _server_insert_cost(_historian(settings, data), *parts[0][1:])
    read = _read_cost(store.inner, _historian(settings, data), *parts[0][1:])
    return {"rows": rows, "us_per_row": per_row, "server_insert_per_row": server, "read": read}


def _read_cost(
    store: ChdbWarehouse, historian: EmulatorHistorian, tags: list[str], start: datetime,
    end: datetime,
) -> dict[str, float]:
    """What readers pay for seeing one row per point: a dashboard's hourly averages over every
    stored row, read through `WonderwareHistory` (`FINAL`) and from the store without it (as a
    plain table would be read), best of three each; first with the first partition loaded
    twice (two loads' rows of it unmerged, as after a reload), then after `OPTIMIZE ... FINAL`."""
    from ww_assets.history_store import HISTORY_TABLE

    replace_slice(store, tags, start, end, historian.read_history(tags, start, end))
    query = ("SELECT TagName, toStartOfHour(DateTime) AS hour, avg(Value) AS v, count() AS n "
             "FROM {table} GROUP BY TagName, hour FORMAT Null")  # fmt: skip
    figures: dict[str, float] = {}
    with store.connect() as conn:
        rows = int(conn.query(f"SELECT count() AS n FROM {store.database}.{HISTORY_TABLE}")
                   .column("n")[0].as_py())  # fmt: skip
        for state in ("reloaded", "merged"):
            if state == "merged":
                conn.command(f"OPTIMIZE TABLE {store.database}.{HISTORY_STORE} FINAL")
            for name, table in (("view", HISTORY_TABLE), ("plain", HISTORY_STORE)):
                best = math.inf
                for _ in range(3):
                    t0 = time.perf_counter()
                    conn.command(query.format(table=f"{store.database}.{table}"))
                    best = min(best, time.perf_counter() - t0)
                figures[f"{state}_{name}_s"] = best
    return {"rows": rows, **figures}


def _server_insert_cost(
    historian: EmulatorHistorian, tags: list[str], start: datetime, end: datetime
) -> dict[str, float]:
    """Per row, what an insert into a ClickHouse *server* costs on this side, measured without
    one: CPU µs of `ServerWarehouse`'s encoding of the Native blocks from the Arrow columns
    (`native_encoding`), and for comparison of clickhouse-driver's own encoding of the same
    rows (Arrow to lists, then `NativeBlocks`); the bytes of each, which must be the same."""
    from clickhouse_driver.defines import CLIENT_REVISION

    from bench.native_blocks import HISTORY_TYPES, NativeBlocks, driver_columns
    from ww_assets.native_encoding import encode_block
    from ww_assets.warehouse import SERVER_INSERT_ROWS, first_rows

    blocks = NativeBlocks()
    rows, native, native_bytes, lists, encode = 0, 0.0, 0, 0.0, 0.0
    tables = _loaded(historian.read_history(tags, start, end))
    while group := first_rows(tables, SERVER_INSERT_ROWS):
        table = pa.concat_tables(group)
        t0 = time.process_time()
        native_bytes += len(encode_block(table, HISTORY_TYPES, CLIENT_REVISION))
        t1 = time.process_time()
        columns = driver_columns(table)
        t2 = time.process_time()
        blocks.write(columns)
        encode += time.process_time() - t2
        lists += t2 - t1
        native += t1 - t0
        rows += table.num_rows
    return {"native_us": native / rows * 1e6, "native_bytes": native_bytes / rows,
            "driver_lists_us": lists / rows * 1e6, "driver_encode_us": encode / rows * 1e6,
            "driver_bytes": blocks.size / rows}  # fmt: skip


# ---------------------------------------------------------------- ww_assets through Dagster


def ww_setup() -> dict[str, Any]:
    """`wonderware/tags` materialized on the instance, and the runs a backfill of every
    history partition makes under the asset's backfill policy (per chunk, consecutive days,
    at most `max_partitions_per_run` each)."""
    import warnings

    import dagster as dg

    from ww_assets.definitions import build_definitions
    from ww_assets.wonderware.keys import HISTORY_KEY, TAGS_KEY
    from ww_assets.wonderware.partitions import TAG_CHUNKS

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    settings = Settings.from_env()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    job = defs.get_implicit_global_asset_job_def()
    if not job.execute_in_process(instance=instance, asset_selection=[TAGS_KEY]).success:
        raise RuntimeError("wonderware/tags failed")
    history = defs.resolve_assets_def(HISTORY_KEY)
    per_run = history.backfill_policy.max_partitions_per_run or 10**9
    chunks = instance.get_dynamic_partitions(TAG_CHUNKS.name)
    return {"chunks": chunks, "max_partitions_per_run": per_run}


def ww_create_runs(ranges: list[list[str]]) -> dict[str, Any]:
    """The backfill's runs, created on the instance as the backfill daemon creates them
    (outside the runs' timed window, as in a deployment): each a range run of
    `wonderware_history_job` of the code location (`ww_assets.definitions:defs`), with the
    command line of its run worker (`dagster api execute_run`, what the Docker and Kubernetes
    run launchers start) and the seconds its creation took."""
    import warnings

    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    from ww_assets.wonderware.jobs import history_job
    from ww_assets.wonderware.run_requests import range_tags

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    instance = dg.DagsterInstance.get()
    repository = ReconstructableRepository.for_module("ww_assets.definitions", "defs", str(Path.cwd()))
    recon_job = repository.get_reconstructable_job(history_job.name)
    job_def, origin = recon_job.get_definition(), recon_job.get_python_origin()
    instance_ref = instance.get_ref()
    runs = []
    for start_key, end_key in ranges:
        started = time.perf_counter()
        run = instance.create_run_for_job(
            job_def=job_def,
            tags={**range_tags(start_key, end_key), "ww/reason": "bench"},
            job_code_origin=origin,
        )
        created_s = time.perf_counter() - started
        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=instance_ref,
            set_exit_code_on_failure=True,
        )
        command = [sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)]
        runs.append({"run_id": run.run_id, "command": command, "created_s": created_s})
    return {"runs": runs}


def ww_run_figures(run_id: str) -> dict[str, Any]:
    """A finished run's figures, from its events on the instance."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    events = instance.all_logs(run_id)
    step_started: dict[str, float] = {}
    step_seconds: dict[str, float] = {}
    body_s = rows = partitions = succeeded_at = 0.0
    for record in events:
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == dg.DagsterEventType.RUN_SUCCESS.value:
            succeeded_at = record.timestamp
        if kind == dg.DagsterEventType.STEP_START.value:
            step_started[event.step_key] = record.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS.value:
            step_seconds[event.step_key] = record.timestamp - step_started[event.step_key]
        if kind == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            body_s = metadata["run_duration_s"].value
            rows = metadata["run_rows"].value
            partitions = metadata["partitions_in_run"].value
    return {
        "success": instance.get_run_by_id(run_id).is_success,
        "rows": rows,
        "partitions": partitions,
        "asset_body_s": body_s,
        "checks_s": sum(v for k, v in step_seconds.items() if "check" in k),
        "first_step_at": min(step_started.values()),
        "succeeded_at": succeeded_at,
    }


STAGES: dict[str, Callable[..., Any]] = {
    "plan": plan,
    "bare": bare,
    "row_path": row_path,
    "rss": rss,
    "cost": cost,
    "ww_setup": ww_setup,
    "ww_create_runs": ww_create_runs,
    "ww_run_figures": ww_run_figures,
    "pymssql_read": pymssql_read,
}


def main(argv: list[str]) -> int:
    name, args = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    if name in ("rss", "pymssql_read"):
        gc.collect()
    result = STAGES[name](**args)
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
