"""Fault injection with real parts: interrupted loads, kill -9, overlapping backfills.

The property under test: once a load of a slice has succeeded,
no reader ever sees a point of it missing, whatever happens to later loads; and a rerun
leaves the slice exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from ww_assets.historian import EmulatorHistorian
from ww_assets.history_store import ensure_schema, replace_slice
from ww_assets.warehouse import ChdbWarehouse
from ww_assets_tests.conftest import REPO
from ww_assets_tests.plant_fixtures import (
    COPIED_TAGS,
    build_trap_plant,
    stored_points,
    warehouse_points,
)
from ww_assets_tests.services.processes import BIN, service_env

DAY = date(2025, 11, 2)
START = datetime(2025, 11, 2, tzinfo=timezone.utc)
END = START + timedelta(days=1)
WW = BIN / "ww"


@pytest.fixture
def plant(tmp_path: Path) -> tuple[Path, ChdbWarehouse, EmulatorHistorian]:
    sqlite = tmp_path / "historian.sqlite"
    build_trap_plant(sqlite)
    warehouse = ChdbWarehouse(tmp_path / "clickhouse", "wonderware")
    with warehouse.connect() as conn:
        ensure_schema(conn, "wonderware")
    return sqlite, warehouse, EmulatorHistorian(sqlite, (1, 2, 3), batch_rows=20)


def _one_by_one(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for offset in range(batch.num_rows):
            yield batch.slice(offset, 1)


def test_a_load_interrupted_between_insert_batches_leaves_the_slice_as_it_was(plant) -> None:
    """The failed load's committed statements stay, and each of their points replaces the
    previous load's copy for readers: no hole (nothing is deleted) and no second copy."""
    sqlite, warehouse, historian = plant
    expected = stored_points(sqlite, COPIED_TAGS, DAY, DAY)
    replace_slice(warehouse, COPIED_TAGS, START, END, historian.read_history(COPIED_TAGS, START, END))
    assert warehouse_points(warehouse, COPIED_TAGS, DAY, DAY) == expected

    def failing() -> Iterator[pa.RecordBatch]:
        for number, batch in enumerate(_one_by_one(historian.read_history(COPIED_TAGS, START, END))):
            if number == 25:
                raise ConnectionResetError("historian connection dropped mid-read")
            yield batch

    committed: list[int] = []
    with pytest.raises(ConnectionResetError):
        replace_slice(warehouse, COPIED_TAGS, START, END, failing(), insert_rows=10,
                      on_batch=lambda stats: committed.append(stats.rows))  # fmt: skip
    assert len(committed) == 2  # two statements of 10 rows had landed before the failure
    assert warehouse_points(warehouse, COPIED_TAGS, DAY, DAY) == expected
    replace_slice(warehouse, COPIED_TAGS, START, END, historian.read_history(COPIED_TAGS, START, END))
    assert warehouse_points(warehouse, COPIED_TAGS, DAY, DAY) == expected


SLOW_LOAD = """
import sys, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from ww_assets.historian import EmulatorHistorian
from ww_assets.history_store import replace_slice
from ww_assets.warehouse import ChdbWarehouse
home = Path(sys.argv[1]); tags = sys.argv[2:]
start = datetime(2025, 11, 2, tzinfo=timezone.utc); end = start + timedelta(days=1)
historian = EmulatorHistorian(home / "historian.sqlite", (1, 2, 3))
def slow():
    for batch in historian.read_history(tags, start, end):
        for offset in range(batch.num_rows):
            yield batch.slice(offset, 1)
            time.sleep(0.05)
def progress(stats):
    print(stats.rows, flush=True)
replace_slice(ChdbWarehouse(home / "clickhouse", "wonderware"), tags, start, end, slow(),
              insert_rows=10, on_batch=progress)
"""


def test_kill_9_during_a_load_then_rerun_is_exact(plant, tmp_path: Path) -> None:
    sqlite, warehouse, historian = plant
    expected = stored_points(sqlite, COPIED_TAGS, DAY, DAY)
    replace_slice(warehouse, COPIED_TAGS, START, END, historian.read_history(COPIED_TAGS, START, END))
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_LOAD, str(tmp_path), *COPIED_TAGS],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "10"  # one insert group landed ...
    assert child.stdout.readline().strip() == "20"  # ... and another: kill it mid-load
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    seen = warehouse_points(warehouse, COPIED_TAGS, DAY, DAY)
    assert set(expected) <= set(seen)  # the killed load took nothing away
    replace_slice(warehouse, COPIED_TAGS, START, END, historian.read_history(COPIED_TAGS, START, END))
    assert warehouse_points(warehouse, COPIED_TAGS, DAY, DAY) == expected


def test_overlapping_backfills_leave_exact_slices(tmp_path: Path) -> None:
    env = service_env({"WW_HOME": str(tmp_path / "ww")})
    subprocess.run([WW, "simulate", "create", "--days", "2", "--tags", "12"], env=env,
                   check=True, capture_output=True, timeout=300)
    # the Dagster instance exists before the two backfills (a fresh instance's storage is
    # created by its first user; two first users at once race in Dagster's own schema setup)
    (tmp_path / "ww" / "dagster").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get()"],
                   env={**env, "DAGSTER_HOME": str(tmp_path / "ww" / "dagster")}, check=True,
                   timeout=120)
    runs = [subprocess.Popen([WW, "backfill", "--days", "2"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs[0][-2000:] + outputs[1][-2000:]
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=2), today - timedelta(days=1)
    warehouse = ChdbWarehouse(tmp_path / "ww" / "clickhouse", "wonderware")
    with warehouse.connect() as conn:
        tags = conn.query("SELECT DISTINCT TagName FROM wonderware.WonderwareTags FINAL "
                          "WHERE Active = 1 ORDER BY TagName").column("TagName").to_pylist()
    expected = stored_points(tmp_path / "ww" / "historian.sqlite", tags, first, last)
    assert warehouse_points(warehouse, tags, first, last) == expected
    assert len(expected) > 1000
