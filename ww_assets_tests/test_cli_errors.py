"""Expected failures of the `ww` command: one line on stderr saying why, a non-zero exit, no
traceback, and nothing created on the way (real subprocesses, real files, a closed port)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ww_assets_tests.conftest import REPO, free_port
from ww_assets_tests.services.processes import BIN, service_env

WW = BIN / "ww"


def _ww(*args: str, home: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(WW), *args], cwd=REPO, env=service_env({"WW_HOME": str(home), **extra}),
        capture_output=True, text=True, timeout=300,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "action", [["extend"], ["live", "--seconds", "0"], ["add-tags", "2", "--days", "0.01"]]
)
def test_simulate_without_a_plant_says_to_create_one_and_creates_nothing(
    tmp_path: Path, action: list[str]
) -> None:
    result = _ww("simulate", *action, home=tmp_path)
    assert result.returncode == 1
    line = _one_line_error(result)
    store = tmp_path / "historian.sqlite"
    assert f"no emulated plant at {store}" in line and "`ww simulate create`" in line, line
    assert not store.exists()


def test_a_second_create_names_the_commands_that_grow_a_plant(tmp_path: Path) -> None:
    assert _ww("simulate", "create", "--days", "0.01", "--tags", "3", home=tmp_path).returncode == 0
    before = (tmp_path / "historian.sqlite").stat().st_size
    result = _ww("simulate", "create", "--days", "0.01", "--tags", "3", home=tmp_path)
    assert result.returncode == 1
    line = _one_line_error(result)
    assert "already holds a plant" in line and "`ww simulate extend`" in line, line
    assert "extend_plant" not in line
    assert (tmp_path / "historian.sqlite").stat().st_size == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "create", "--days", "-1"], "argument --days: must be at least 0, got -1"),
        (["simulate", "create", "--tags", "0"], "argument --tags: must be at least 1, got 0"),
        (["simulate", "add-tags", "-3"], "argument count: must be at least 1, got -3"),
        (["backfill", "--days", "-2"], "argument --days: must be at least 1, got -2"),
        (["backfill", "--days", "2.5"], "argument --days: '2.5' is not a whole number"),
        (["simulate", "live", "--late-probability", "2"], "must be at most 1, got 2"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    home = tmp_path / "home"
    result = _ww(*args, home=home)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not home.exists()  # no plant, no Dagster instance


def test_status_with_an_unreachable_clickhouse_server_fails_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = _ww("status", home=tmp_path, CLICKHOUSE_HOST="127.0.0.1", CLICKHOUSE_PORT=str(port))
    assert result.returncode == 1
    line = _one_line_error(result)
    assert line.startswith(f"ww: status: ClickHouse server 127.0.0.1:{port}"), line
    assert "Connection refused" in line, line


def test_doctor_with_a_bad_value_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """As the README says: configuration errors exit 2 before any system is tried."""
    result = _ww("doctor", home=tmp_path, WONDERWARE_PORT="sql")
    assert result.returncode == 2
    assert "WONDERWARE_PORT='sql' is not a whole number" in _one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["backfill"], ["status"], ["simulate", "live"]])
def test_a_bad_option_prints_the_subcommand_s_usage(tmp_path: Path, command: list[str]) -> None:
    result = _ww(*command, "--bogus", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: ww {' '.join(command)} ")
    assert f"ww {' '.join(command)}: error: unrecognized arguments: --bogus" in result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["status"], ["backfill"], ["simulate", "create"],
                                     ["simulate", "extend"], ["simulate", "live"],
                                     ["simulate", "add-tags"]])
def test_every_option_s_help_gives_its_default(tmp_path: Path, command: list[str]) -> None:
    result = _ww(*command, "--help", home=tmp_path)
    assert result.returncode == 0
    options = result.stdout.split("options:", 1)[1]
    entries: list[str] = []
    for line in options.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries:
            entries[-1] += " " + line.strip()
    entries = [e for e in entries if not e.lstrip().startswith("-h, --help")]
    assert entries, result.stdout
    assert all("default" in e for e in entries), [e for e in entries if "default" not in e]
