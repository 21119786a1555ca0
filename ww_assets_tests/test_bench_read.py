"""`make bench-read` at a tiny size: the table it measures shows every point once (the view's
answer, checked by another way of counting), and the harness writes its figures. No timing
assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import read_path
from ww_assets.config import Settings
from ww_assets.history_store import HISTORY_STORE, HISTORY_TABLE
from ww_assets.warehouse import ChdbWarehouse

REPO = Path(__file__).resolve().parent.parent
DB = read_path.DB


def test_the_benchmarked_view_shows_every_point_once_unmerged_and_merged(tmp_path: Path) -> None:
    figures = read_path.measure(tmp_path, 50_000, Settings.from_env({}))
    unmerged, merged = figures["unmerged"], figures["merged"]
    # 31 minutes of 10 tags at 1 s and 990 at 1 min; one tag's reloaded points less the sync's
    assert figures["rows_generated"] == 31 * (10 * 60 + 990)
    assert figures["points"] == figures["rows_generated"] - (31 - 15)
    assert unmerged["view_count"] == merged["view_count"] == figures["points"]
    # the unmerged store holds every load's rows and the omitted tag's 31 deletion markers, so
    # the view had versions to collapse
    assert unmerged["stored_rows"] == figures["rows_generated"] + figures["reload_rows"] + 31
    assert unmerged["parts"] > figures["reload_loads"] and merged["parts"] == merged["partitions"]
    for state in (unmerged, merged):
        for query in read_path.QUERIES:
            for reader in ("view", "plain"):
                assert state[f"{query}_{reader}_s"] > 0
                assert state[f"{query}_{reader}_rows_read"] > 0
    with ChdbWarehouse(tmp_path / "clickhouse", DB).connect() as conn:
        newest = conn.query(
            "SELECT count() AS n FROM (SELECT argMax(IsDeleted, LoadId) AS deleted "
            f"FROM {DB}.{HISTORY_STORE} GROUP BY TagName, DateTime) WHERE deleted = 0"
        ).column("n")[0].as_py()
        distinct = conn.query(
            f"SELECT uniqExact(TagName, DateTime) AS n FROM {DB}.{HISTORY_TABLE}"
        ).column("n")[0].as_py()
        omitted = conn.query(
            f"SELECT count() AS n FROM {DB}.{HISTORY_TABLE} WHERE TagName = {{tag:String}}",
            {"tag": read_path.tag_name(read_path.TAGS - 1)},
        ).column("n")[0].as_py()
    assert newest == distinct == figures["points"]
    assert omitted == 15  # the minutes the syncs wrote again


def test_bench_read_prints_and_writes_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "WONDERWARE_"))}
    for name in ("DAGSTER_HOME", "CLICKHOUSE_HOST", "REDIS_URL", "CLICKHOUSE_DB"):
        env.pop(name, None)
    env.update(WW_HOME=str(tmp_path), BENCH_READ_ROWS="3180", BENCH_READ_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "bench.read_path"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "artifacts" / "bench-read.json").read_text()) == printed
    assert printed["rows"] == 3180 and printed["rows_generated"] == 3180
    assert printed["merged"]["view_count"] == printed["points"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]  # its data is removed
