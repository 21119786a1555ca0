"""`make bench`: ww_assets against a bare copy and the replaced system's row path, on one dataset.

Stages, each in its own process with its own `WW_HOME` under one temporary directory:

1. data: a reproducible emulator store (`bench.data`), BENCH_TAGS × BENCH_DAYS at one point
   per BENCH_INTERVAL_MS per tag.
2. plan: the tag chunks of the dataset (a catalog in its own process, as `wonderware/tags`
   makes it), which the bare copy, the row path and the cost stage copy.
   bare: the same historian reads and ClickHouse inserts as a minimal script (no Dagster, one
   warehouse session, the pipeline's streamed inserts, no clip, no delete): the practical limit
   on this machine. Timed from its process start (interpreter and imports included, as in a
   ww run) to the last insert.
3. ww: a backfill of every partition through Dagster as a user launches it: `wonderware/tags`
   first (not timed); the runs of the asset's backfill policy (per chunk, up to
   `max_partitions_per_run` days) created on a real instance (the project's `dagster.yaml`) as
   the backfill daemon creates them (not timed; their creation time is reported); then each
   run's worker process, `dagster api execute_run` (the command the Docker and Kubernetes run
   launchers start; the default launcher's code server spawns an equivalent process), one
   after the other. Timed from the first worker's start to the last one's exit: run
   start-up and the partitioned checks included (the report also gives the rate without the
   check step). The runs' figures are read from the instance afterwards, outside the timed
   window.
4. row path: the replaced system's approach (dicts, one pydantic model per row, Moose's
   JSONEachRow insert) on the first BENCH_ROW_PATH_ROWS rows of the same partitions (its rate
   does not depend on size).
5. cost: CPU µs per row of each step after the driver (conversion, clip + regroup, insert),
   and of the client side of an insert into a ClickHouse server (measured without one); and
   the readers' price of one row per point: a query through `WonderwareHistory` (`FINAL`)
   against the same on the store without `FINAL`.
6. rss: peak RSS of one partition's `replace_slice(read_history(...))` in a fresh process,
   for a BENCH_RSS_SMALL_ROWS and a BENCH_RSS_BIG_ROWS partition (default 1M and 10M).
7. pymssql: the same two partitions read through `SqlServerHistorian` (pymssql over TDS) from
   `ww simulate serve` in another process: the client's CPU µs per row and its peak RSS.

Prints a readable report, then one JSON line of every figure. `BENCH_ONLY=cost` runs the data,
plan and cost stages only.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIRST_DAY = date(2025, 6, 1)

# Variables that would point a stage at real systems or change its partitions.
_ISOLATED = ("WONDERWARE_HOST", "CLICKHOUSE_HOST", "REDIS_URL", "CLICKHOUSE_DB", "DAGSTER_HOME")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SystemExit(f"bench: {name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"bench: {name}={raw!r} must be positive")
    return value


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tags = _int("BENCH_TAGS", 10)
        self.days = _int("BENCH_DAYS", 10)
        self.interval_ms = _int("BENCH_INTERVAL_MS", 1000)
        self.chunk_size = _int("BENCH_CHUNK_SIZE", 10)
        self.row_path_rows = _int("BENCH_ROW_PATH_ROWS", 300_000)
        self.cost_rows = _int("BENCH_COST_ROWS", 1_000_000)
        self.rss_small = _int("BENCH_RSS_SMALL_ROWS", 1_000_000)
        self.rss_big = _int("BENCH_RSS_BIG_ROWS", 10_000_000)
        self.rss_interval_ms = _int("BENCH_RSS_INTERVAL_MS", 1000)
        self.data = root / "data" / "historian.sqlite"
        self.log = root / "stages.log"

    # ------------------------------------------------------------ processes

    def env(self, stage: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _ISOLATED}
        home = self.root / stage
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            WW_HOME=str(home),
            DAGSTER_HOME=str(home / "dagster"),
            WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME=FIRST_DAY.isoformat(),
            WONDERWARE_PIPELINE_TAG_CHUNK_SIZE=str(self.chunk_size),
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        return env

    def start(self, stage: str, name: str, **args: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.stages", name, json.dumps(args)],
            cwd=REPO,
            env=self.env(stage),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, process: subprocess.Popen[str], what: str) -> dict[str, Any]:
        out, err = process.communicate()
        with self.log.open("a") as log:
            log.write(f"===== {what}\n{err}\n{out}\n")
        if process.returncode != 0:
            raise SystemExit(f"bench: {what} failed (exit {process.returncode}):\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def stage(self, stage: str, name: str, **args: Any) -> dict[str, Any]:
        return self.finish(self.start(stage, name, **args), f"{stage}/{name}")

    def run_worker(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """One run's worker process (`dagster api execute_run`, as a run launcher starts it);
        its output goes to the log."""
        worker = subprocess.run(command, cwd=REPO, env=self.env("ww"), capture_output=True,
                                text=True)
        with self.log.open("a") as log:
            log.write(f"===== ww/run worker\n{worker.stderr}\n{worker.stdout}\n")
        return worker

    # ------------------------------------------------------------ stages

    def make_data(self) -> dict[str, Any]:
        from bench.data import write_dataset

        started = time.perf_counter()
        dataset = write_dataset(self.data, self.tags, self.days, FIRST_DAY, self.interval_ms)
        return {"points": dataset.points, "seconds": time.perf_counter() - started,
                "size_mb": self.data.stat().st_size / 2**20}

    def ww(self) -> dict[str, Any]:
        home = self.root / "ww"
        (home / "dagster").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
        os.link(self.data, home / "historian.sqlite")
        setup = self.stage("ww", "ww_setup")
        per_run = int(setup["max_partitions_per_run"])
        runs = []
        for chunk in setup["chunks"]:
            for first in range(0, self.days, per_run):
                last = min(first + per_run, self.days) - 1
                runs.append((f"{chunk}|{_day(first)}", f"{chunk}|{_day(last)}"))
        created = self.stage("ww", "ww_create_runs", ranges=runs)["runs"]
        results, runs_done = [], []
        started, cpu = time.perf_counter(), _children_cpu()
        for run in created:
            run_started, launched_at = time.perf_counter(), time.time()
            worker = self.run_worker(run["command"])
            wall_s, ended_at = time.perf_counter() - run_started, time.time()
            if worker.returncode != 0:
                raise SystemExit(f"bench: ww run {run['run_id']} failed (exit {worker.returncode}), "
                                 f"see {self.log}")
            runs_done.append((run, wall_s, launched_at, ended_at))
        seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
        # Read from the instance after the runs, outside the timed window.
        for run, wall_s, launched_at, ended_at in runs_done:
            result = {**run, **self.stage("ww", "ww_run_figures", run_id=run["run_id"])}
            if not result["success"]:
                raise SystemExit(f"bench: ww run {run['run_id']} did not succeed, see {self.log}")
            result["wall_s"] = wall_s
            result["startup_s"] = result["first_step_at"] - launched_at
            result["exit_s"] = ended_at - result["succeeded_at"]
            results.append(result)
        return {"runs": results, "seconds": seconds, "cpu_s": cpu, "max_partitions_per_run": per_run,
                "rows": sum(r["rows"] for r in results),
                "partitions": sum(r["partitions"] for r in results)}

    def cost(self, chunks: dict[str, list[str]]) -> dict[str, Any]:
        return self.stage("cost", "cost", data=str(self.data), first_day=FIRST_DAY.isoformat(),
                          days=self.days, chunks=chunks, max_rows=self.cost_rows)

    def rss(self) -> dict[str, Any]:
        from bench.data import write_dataset

        per_tag = 86_400_000 // self.rss_interval_ms
        small_tags = math.ceil(self.rss_small / per_tag)
        big_tags = math.ceil(self.rss_big / per_tag)
        path = self.root / "rss-data" / "historian.sqlite"
        started = time.perf_counter()
        dataset = write_dataset(path, big_tags, 1, FIRST_DAY, self.rss_interval_ms)
        made = time.perf_counter() - started
        # Separate fresh processes; they may share the CPU (only memory is measured here).
        small = self.start("rss-small", "rss", data=str(path), first_day=FIRST_DAY.isoformat(),
                           tags=list(dataset.tags[:small_tags]))
        big = self.start("rss-big", "rss", data=str(path), first_day=FIRST_DAY.isoformat(),
                         tags=list(dataset.tags[:big_tags]))
        return {"data_s": made, "small": self.finish(small, "rss-small"),
                "big": self.finish(big, "rss-big"), "path": str(path),
                "small_tags": list(dataset.tags[:small_tags]), "big_tags": list(dataset.tags[:big_tags])}

    def pymssql(self, rss: dict[str, Any]) -> dict[str, Any]:
        """The SQL Server path's client: the RSS stage's partitions read through pymssql over
        TDS, one after the other (each against its own `ww simulate serve`)."""
        return {
            size: self.stage(f"pymssql-{size}", "pymssql_read", data=rss["path"],
                             first_day=FIRST_DAY.isoformat(), tags=rss[f"{size}_tags"])
            for size in ("small", "big")
        }  # fmt: skip


def _children_cpu() -> float:
    """CPU seconds of every waited-for child process (runs, and the step processes they wait for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _day(offset: int) -> str:
    from datetime import timedelta

    return (FIRST_DAY + timedelta(days=offset)).isoformat()


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, load {os.getloadavg()[0]:.2f}")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="wwbench-", dir="/tmp"))
    keep = os.environ.get("BENCH_KEEP", "") not in ("", "0")
    bench = Bench(root)
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        say(f"bench: {_machine()}")
        say(f"bench: dataset {bench.tags} tags × {bench.days} days, one point per "
            f"{bench.interval_ms} ms per tag, tag chunks of {bench.chunk_size}; work in {root}")
        data = bench.make_data()
        rows = data["points"]
        say(f"data      {rows:>11,} points written in {data['seconds']:.1f} s "
            f"({data['size_mb']:.0f} MB)")

        chunks = bench.stage("plan", "plan", data=str(bench.data))
        if os.environ.get("BENCH_ONLY", "") == "cost":
            say(json.dumps({**_say_cost(say, bench.cost(chunks)), "machine": _machine()}))
            return 0
        bare = bench.stage("bare", "bare", data=str(bench.data),
                           first_day=FIRST_DAY.isoformat(), days=bench.days, chunks=chunks)
        _check(bare["rows"], rows, "bare read")
        _check(bare["stored"], rows, "bare stored")
        bare_rate = bare["rows"] / bare["seconds"]
        bare_cpu_rate = bare["rows"] / bare["cpu_s"]
        say(f"bare      {bare['rows']:>11,} rows in {bare['seconds']:6.1f} s = {bare_rate:>9,.0f} rows/s "
            f"({bare_cpu_rate:,.0f} rows per CPU-second; process start and imports "
            f"{bare['seconds'] - bare['copy_s']:.1f} s, the copy alone {bare['rows'] / bare['copy_s']:,.0f} rows/s)")

        ww = bench.ww()
        _check(ww["rows"], rows, "ww")
        ww_rate = ww["rows"] / ww["seconds"]
        n_runs, n_parts = len(ww["runs"]), ww["partitions"]
        body = sum(r["asset_body_s"] for r in ww["runs"])
        checks = sum(r["checks_s"] for r in ww["runs"])
        overhead_run = (ww["seconds"] - body) / n_runs
        overhead_part = (ww["seconds"] - bare["seconds"]) / n_parts
        ww_cpu_rate = ww["rows"] / ww["cpu_s"]
        say(f"ww        {ww['rows']:>11,} rows in {ww['seconds']:6.1f} s = {ww_rate:>9,.0f} rows/s "
            f"({ww_cpu_rate:,.0f} rows per CPU-second; {n_runs} runs, {n_parts} partitions, ≤{ww['max_partitions_per_run']} per run)")
        for r in ww["runs"]:
            say(f"          run {r['run_id'][:8]}: {r['partitions']} partitions, {r['rows']:,} rows, "
                f"wall {r['wall_s']:.1f} s: start-up to the first step {r['startup_s']:.1f} s, "
                f"asset body {r['asset_body_s']:.1f} s, checks {r['checks_s']:.1f} s, exit after "
                f"the run's success {r['exit_s']:.1f} s, other events "
                f"{r['wall_s'] - r['startup_s'] - r['asset_body_s'] - r['checks_s'] - r['exit_s']:.1f} s")
        created = sum(r["created_s"] for r in ww["runs"]) / n_runs
        say(f"          run creation (the backfill daemon's work, before the run's process starts; "
            f"not in the timed window): {created:.2f} s per run")
        say(f"          without the check step: {ww['rows'] / (ww['seconds'] - checks):,.0f} rows/s; "
            f"asset body alone: {ww['rows'] / body:,.0f} rows/s")

        row = bench.stage("row", "row_path", data=str(bench.data), first_day=FIRST_DAY.isoformat(),
                          days=bench.days, chunks=chunks, max_rows=bench.row_path_rows)
        _check(row["stored"], row["rows"], "row path stored")
        row_rate = row["rows"] / row["seconds"]
        row_cpu_rate = row["rows"] / row["cpu_s"]
        say(f"row path  {row['rows']:>11,} rows in {row['seconds']:6.1f} s = {row_rate:>9,.0f} rows/s "
            f"({row_cpu_rate:,.0f} rows per CPU-second)")

        cost_figures = _say_cost(say, bench.cost(chunks))

        rss = bench.rss()
        small, big = rss["small"], rss["big"]
        say(f"rss       {small['rows']:>11,}-row partition: peak {small['peak_rss_mb']:.0f} MB "
            f"(after imports {small['rss_before_mb']:.0f} MB); {big['rows']:,}-row partition: peak "
            f"{big['peak_rss_mb']:.0f} MB (after imports {big['rss_before_mb']:.0f} MB); "
            f"ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}; data {rss['data_s']:.1f} s")

        wire = bench.pymssql(rss)
        wsmall, wbig = wire["small"], wire["big"]
        wire_us = wbig["cpu_s"] * 1e6 / wbig["rows"]
        say(f"pymssql   {wbig['rows']:>11,} rows through pymssql over TDS from `ww simulate serve`: "
            f"client CPU {wire_us:.2f} µs/row (≈ {1e6 / wire_us:,.0f} rows/s per core; the wire "
            f"delivered {wbig['rows'] / wbig['seconds']:,.0f} rows/s, bound by the emulator's "
            f"server); peak RSS {wsmall['peak_rss_mb']:.0f} MB for {wsmall['rows']:,} rows, "
            f"{wbig['peak_rss_mb']:.0f} MB for {wbig['rows']:,}")

        figures = {
            "ww_rows_per_s": round(ww_rate),
            "bare_rows_per_s": round(bare_rate),
            "row_path_rows_per_s": round(row_rate),
            "ratio_vs_bare": round(ww_rate / bare_rate, 3),
            "ratio_vs_row_path": round(ww_rate / row_rate, 2),
            "ratio_vs_bare_without_checks": round(ww["rows"] / (ww["seconds"] - checks) / bare_rate, 3),
            "ratio_vs_bare_copy_only": round(ww_rate * bare["copy_s"] / bare["rows"], 3),
            "ratio_vs_bare_cpu": round(ww_cpu_rate / bare_cpu_rate, 3),
            "ratio_vs_row_path_cpu": round(ww_cpu_rate / row_cpu_rate, 2),
            "peak_rss_mb_1m": round(small["peak_rss_mb"], 1),
            "peak_rss_mb_10m": round(big["peak_rss_mb"], 1),
            "rss_ratio_10m_vs_1m": round(big["peak_rss_mb"] / small["peak_rss_mb"], 3),
            "rss_rows_small": small["rows"],
            "rss_rows_big": big["rows"],
            "overhead_s_per_run": round(overhead_run, 2),
            "overhead_s_per_partition": round(overhead_part, 3),
            "checks_s_per_run": round(checks / n_runs, 2),
            "startup_s_per_run": round(sum(r["startup_s"] for r in ww["runs"]) / n_runs, 2),
            "run_creation_s_per_run": round(created, 2),
            "exit_s_per_run": round(sum(r["exit_s"] for r in ww["runs"]) / n_runs, 2),
            "ww_body_rows_per_s": round(ww["rows"] / body),
            "rows": rows,
            "runs": n_runs,
            "partitions": n_parts,
            "max_partitions_per_run": ww["max_partitions_per_run"],
            "row_path_rows": row["rows"],
            **cost_figures,
            "pymssql_cpu_us_per_row": round(wire_us, 3),
            "pymssql_rows_per_s_per_core": round(1e6 / wire_us),
            "pymssql_wire_rows_per_s": round(wbig["rows"] / wbig["seconds"]),
            "pymssql_peak_rss_mb_small": round(wsmall["peak_rss_mb"], 1),
            "pymssql_peak_rss_mb_big": round(wbig["peak_rss_mb"], 1),
            "machine": _machine(),
        }
        say(json.dumps(figures))
        return 0
    finally:
        if keep:
            print(f"bench: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _say_cost(say: Any, cost: dict[str, Any]) -> dict[str, Any]:
    """The cost stage's report lines, and its figures for the JSON line."""
    us = cost["us_per_row"]
    after = us["convert"] + us["clip"] + us["insert"]
    say(f"cost      CPU µs/row on {cost['rows']:,} rows: emulator (driver stand-in) "
        f"{us['driver']:.2f} | after the driver: convert {us['convert']:.2f}, clip+accounting "
        f"{us['clip']:.2f}, insert {us['insert']:.2f} = {after:.2f} "
        f"(≈ {1e6 / after:,.0f} rows/s per core)")
    to_server = cost["server_insert_per_row"]
    server = to_server["native_us"]
    driver = to_server["driver_lists_us"] + to_server["driver_encode_us"]
    if to_server["native_bytes"] != to_server["driver_bytes"]:
        raise SystemExit(f"bench: Native blocks of {to_server['native_bytes']:.2f} bytes/row, "
                         f"clickhouse-driver's of {to_server['driver_bytes']:.2f}")
    say(f"          a ClickHouse server instead of chDB (client side, no network): Native blocks "
        f"from Arrow {server:.2f} µs/row in place of the insert's {us['insert']:.2f} "
        f"(clickhouse-driver's own encoding: Arrow to lists {to_server['driver_lists_us']:.2f} "
        f"+ encoding {to_server['driver_encode_us']:.2f} = {driver:.2f}); "
        f"{to_server['native_bytes']:.0f} bytes/row before compression")

    read = cost["read"]
    say(f"          readers (one row per point, through FINAL), hourly averages over all "
        f"{read['rows']:,} rows: {read['reloaded_view_s']:.2f} s through the view with a "
        f"partition reloaded ({read['reloaded_plain_s']:.2f} s from the store without FINAL), "
        f"{read['merged_view_s']:.2f} s after OPTIMIZE FINAL ({read['merged_plain_s']:.2f} s)")

    return {
        "cpu_us_per_row_driver_emulator": round(us["driver"], 3),
        "cpu_us_per_row_convert": round(us["convert"], 3),
        "cpu_us_per_row_clip": round(us["clip"], 3),
        "cpu_us_per_row_insert": round(us["insert"], 3),
        "cpu_us_per_row_after_driver": round(after, 3),
        "cpu_us_per_row_server_insert_client_side": round(server, 3),
        "cpu_us_per_row_server_insert_driver_encoding": round(driver, 3),
        "read_final_s": round(read["reloaded_view_s"], 3),
        "read_plain_s": round(read["reloaded_plain_s"], 3),
        "read_final_merged_s": round(read["merged_view_s"], 3),
        "read_plain_merged_s": round(read["merged_plain_s"], 3),
        "read_rows": read["rows"],
    }


def _check(actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise SystemExit(f"bench: {what}: {actual:,} rows, expected {expected:,}")


if __name__ == "__main__":
    raise SystemExit(main())
