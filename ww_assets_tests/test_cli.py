"""The `ww` command and `make demo`, as a user runs them (subprocesses, real files)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ww_assets_tests.conftest import REPO, free_port
from ww_assets_tests.services.processes import BIN, service_env

WW = BIN / "ww"


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _env(**extra: str) -> dict[str, str]:
    return service_env(extra)


def test_make_demo_on_an_empty_home_reports_what_it_loaded(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    env = _env()
    result = _run(["make", "demo", f"WW_HOME={home}", "DEMO_TAGS=12", "DEMO_DAYS=2"], env, 600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "backfill succeeded" in result.stdout and "sync succeeded" in result.stdout
    # progress lines (the runs' log, on stderr) and a summary, not Dagster's event stream or
    # its preview warnings
    assert "partition 1/2:" in result.stderr and "run total:" in result.stderr
    for noise in ("DEBUG", "STEP_START", "BetaWarning", "PreviewWarning", "Traceback"):
        assert noise not in result.stdout + result.stderr, noise
    status = _run([str(WW), "status", "--json"], _env(WW_HOME=str(home)))
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)

    today = datetime.now(timezone.utc).date()
    # the backfill's complete days, then the sync up to the plant's newest point
    newest = datetime.fromisoformat(report["newest_data"])
    with sqlite3.connect(home / "historian.sqlite") as conn:
        plant_newest = conn.execute(
            "SELECT max(p.DateTime) FROM Points p JOIN TagRef r USING (TagName) "
            "JOIN Tag t USING (TagName) WHERE t.AcquisitionType <> 3 AND r.TagType IN (1, 2, 3)"
        ).fetchone()[0]
        # current: the sync read up to a few seconds before it ran (the safety margin), so the
        # plant's very newest points may be a sync away
        assert f"{newest:%Y-%m-%d %H:%M:%S.%f}"[:-3] <= plant_newest
        assert (datetime.now(timezone.utc) - newest.replace(tzinfo=timezone.utc)).total_seconds() < 300
        expected = conn.execute(
            "SELECT count(*), count(DISTINCT p.TagName) FROM Points p JOIN TagRef r USING (TagName) "
            "JOIN Tag t USING (TagName) WHERE t.AcquisitionType <> 3 AND r.TagType IN (1, 2, 3) "
            "AND p.DateTime >= ? AND p.DateTime <= ?",
            (f"{today - timedelta(days=2)} 00:00:00.000", f"{newest:%Y-%m-%d %H:%M:%S.%f}"[:-3]),
        ).fetchone()
    assert report["total_data_points"] == expected[0] > 10_000
    assert report["total_tags"] == expected[1]
    assert report["oldest_data"].startswith(str(today - timedelta(days=2)))
    assert sum(c["rows"] for c in report["chunks"]) == expected[0]
    assert report["checks"]["partitions_verified"] == report["checks"]["partitions_loaded"] == 2
    assert (home / "dagster" / "dagster.yaml").exists()  # runs are kept under WW_HOME
    # the historian's load of the last 24 h, as every metered client on this machine recorded it
    load = report["historian_load"]
    assert load["read"]["queries"] >= 2 and load["read"]["rows"] >= expected[0]
    assert load["catalog"]["queries"] >= 1 and load["queries_per_minute"] > 0
    text = _run([str(WW), "status"], _env(WW_HOME=str(home)))
    assert "historian load, last 24 h" in text.stdout and "  read " in text.stdout


def test_status_on_an_empty_home_says_so_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nothing-here"
    result = _run([str(WW), "status", "--json"], _env(WW_HOME=str(home)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["total_data_points"] == 0 and report["newest_data"] is None
    assert report["chunks"] == [] and "make demo" in report["note"]
    text = _run([str(WW), "status"], _env(WW_HOME=str(home)))
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == (f"nothing stored in WW_HOME={home} yet: start with `make demo` "
                                   "(or `ww simulate create`, then `ww backfill`)")
    assert not text.stderr and not home.exists()
    assert report["historian_load"]["read"] == {"queries": 0, "rows": 0, "seconds": 0.0}


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    result = _run([str(WW), "status"], _env(WW_HOME=str(tmp_path), WONDERWARE_PORT="sql"))
    assert result.returncode == 2
    assert "WONDERWARE_PORT='sql' is not a whole number" in result.stderr


def test_doctor_reports_each_system_and_fails_on_an_unreachable_historian(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = _run([str(WW), "doctor"], _env(WW_HOME=str(tmp_path), WONDERWARE_HOST="127.0.0.1",
                                            WONDERWARE_PORT=str(port), WONDERWARE_LOGIN_TIMEOUT="3"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["config", "historian", "warehouse", "cache"]
    assert lines[1].split()[1] == "FAIL" and f"127.0.0.1:{port}" in lines[1]
    assert lines[2].split()[1] == "ok" and lines[3].split()[1] == "ok"


def test_doctor_fails_on_an_unreachable_clickhouse_server(tmp_path: Path) -> None:
    """CLICKHOUSE_HOST set: the warehouse is the server through dagster-clickhouse (real
    clickhouse-driver against a closed port), and the failure names it."""
    env = _env(WW_HOME=str(tmp_path))
    assert _run([str(WW), "simulate", "create", "--days", "0.1", "--tags", "5"], env).returncode == 0
    port = free_port()  # nothing listens there
    result = _run([str(WW), "doctor"], {**env, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(port)})
    assert result.returncode == 1
    warehouse = next(line for line in result.stdout.splitlines() if line.startswith("warehouse"))
    assert warehouse.split()[1] == "FAIL" and f"127.0.0.1:{port}" in warehouse, warehouse
    # The doctor's line is the report: no "Failed to connect" traceback from the driver's logger.
    assert "Traceback" not in result.stderr and "Failed to connect" not in result.stderr, result.stderr


def test_doctor_passes_on_embedded_defaults(tmp_path: Path) -> None:
    env = _env(WW_HOME=str(tmp_path))
    assert _run([str(WW), "simulate", "create", "--days", "0.1", "--tags", "5"], env).returncode == 0
    result = _run([str(WW), "doctor"], env)
    assert result.returncode == 0, result.stdout
    assert "historian emulator at" in result.stdout and "chDB (embedded)" in result.stdout
    first = datetime.now(timezone.utc) - timedelta(days=0.1)  # the plant `--days 0.1` made
    assert (f"history partitions from {first:%Y-%m-%d} (the emulated plant's first day)"
            in result.stdout), result.stdout


def test_doctor_on_an_empty_home_says_how_to_start_and_creates_nothing(tmp_path: Path) -> None:
    result = _run([str(WW), "doctor"], _env(WW_HOME=str(tmp_path)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"config     ok    WW_HOME={tmp_path}"
    assert lines[1].split()[1] == "FAIL" and "ww simulate create" in lines[1]
    assert lines[2].split()[1] == "ok" and "nothing stored yet; start with `make demo`" in lines[2]
    assert list(tmp_path.iterdir()) == []
