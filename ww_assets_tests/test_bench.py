"""`make bench` at a tiny size: the harness runs end to end and ends with the contract's JSON
line. No timing assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONTRACT_KEYS = (
    "ww_rows_per_s",
    "bare_rows_per_s",
    "row_path_rows_per_s",
    "ratio_vs_bare",
    "ratio_vs_row_path",
    "peak_rss_mb_1m",
    "peak_rss_mb_10m",
    "overhead_s_per_run",
)

TINY = {
    # one chunk of 2 tags × 1 day, one point a minute: 2,880 rows, one backfill run
    "BENCH_TAGS": "2",
    "BENCH_DAYS": "1",
    "BENCH_INTERVAL_MS": "30000",
    "BENCH_CHUNK_SIZE": "2",
    "BENCH_ROW_PATH_ROWS": "1000",
    "BENCH_COST_ROWS": "1000",
    "BENCH_RSS_SMALL_ROWS": "1000",
    "BENCH_RSS_BIG_ROWS": "5000",
    "BENCH_RSS_INTERVAL_MS": "60000",
}


def test_bench_harness_ends_with_the_contract_json_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "WONDERWARE_"))}
    env.update(TINY)
    for name in ("WW_HOME", "DAGSTER_HOME", "CLICKHOUSE_HOST", "REDIS_URL", "CLICKHOUSE_DB"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in CONTRACT_KEYS:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures.get(key))
    assert 0 < figures["startup_s_per_run"] < figures["overhead_s_per_run"]
    assert 0 < figures["exit_s_per_run"] < figures["overhead_s_per_run"]
    assert figures["cpu_us_per_row_server_insert_client_side"] > 0
    assert figures["pymssql_cpu_us_per_row"] > 0 and figures["pymssql_rows_per_s_per_core"] > 0
    assert figures["pymssql_peak_rss_mb_big"] > 0
    assert figures["rows"] == 2 * 2880
    assert figures["runs"] == 1
    assert figures["rss_rows_small"] == 1440 and figures["rss_rows_big"] == 4 * 1440
