"""`make bench-sync` at a tiny size: the day of operation stays exact (late points and
store-and-forward bursts included) and one new tag's load reads and writes only its own rows.
No timing assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "BENCH_SYNC_TAGS": "30",
    "BENCH_SYNC_HOURS": "2",
    "BENCH_NEWTAG_MATES": "3",
    "BENCH_NEWTAG_DAYS": "4",
}


def test_a_tiny_day_of_operation_is_exact_and_a_new_tag_loads_only_its_own_rows() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "WONDERWARE_"))}
    env.update(TINY)
    for name in ("WW_HOME", "DAGSTER_HOME", "CLICKHOUSE_HOST", "REDIS_URL", "CLICKHOUSE_DB"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "bench.sync_day"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["syncs"] == 120 and figures["late_single_points"] == 12 * 20
    # every stored point of the synced hours once, late ones and the remote bursts included
    assert figures["exact_until_last_recount"]
    assert figures["synced_points"] == figures["synced_points_unique"]
    assert figures["sync_rows_repaired"] > 0  # the recount found the late single points
    assert figures["reconcile_differing_partitions"] == 0
    assert figures["refresh_rows_read_per_point"] == 1.0
    assert figures["new_tag_run_succeeded"]
    assert figures["new_tag_rows_read_per_own_row"] == figures["new_tag_rows_written_per_own_row"] == 1.0
    assert figures["new_tag_historian_reads"] == figures["new_tag_partitions"] == 4
