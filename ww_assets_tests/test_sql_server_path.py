"""The production historian path: `SqlServerHistorian` through pymssql over the TDS wire of
`ww simulate serve`, driven through Dagster exactly as against AVEVA's SQL Server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ww_assets.emulator import plant, store
from ww_assets.emulator.tds_server import Faults, HistorianTdsServer, start_background
from ww_assets.historian import (
    MAX_TAGS_PER_QUERY,
    rows_to_batch,
    EmulatorHistorian,
    HistorianError,
    SqlServerHistorian,
)
from ww_assets.resilience import Fault, classify
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import (
    COPIED_TAGS,
    DAYS,
    TRAP_TAGS,
    build_trap_plant,
    stored_points,
    stored_points_between,
    warehouse_points,
    warehouse_points_between,
)

USER, PASSWORD = "ww_reader", "pw;'--ü"
UTC = timezone.utc


def _serve(path: Path, faults: Faults | None = None) -> HistorianTdsServer:
    server, _ = start_background(path, user=USER, password=PASSWORD, batch_rows=1000,
                                 faults=faults)  # fmt: skip
    return server


def _point_pipeline_at(server: HistorianTdsServer, p: Pipeline, mp: pytest.MonkeyPatch) -> None:
    host, port = server.address
    for name, value in {
        "WONDERWARE_HOST": host, "WONDERWARE_PORT": str(port), "WONDERWARE_USERNAME": USER,
        "WONDERWARE_PASSWORD": PASSWORD, "WONDERWARE_QUERY_TIMEOUT": "3",
        "WONDERWARE_LOGIN_TIMEOUT": "5", "WONDERWARE_RETRY_BASE_DELAY": "0",
    }.items():  # fmt: skip
        mp.setenv(name, value)
    p.reload()


@pytest.fixture
def wired(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, HistorianTdsServer]]:
    """The trap plant behind `ww simulate serve`, the pipeline pointed at it by env vars."""
    build_trap_plant(pipeline.settings.historian_sqlite)
    server = _serve(pipeline.settings.historian_sqlite)
    _point_pipeline_at(server, pipeline, monkeypatch)
    yield pipeline, server
    server.close()


def _client(p: Pipeline) -> SqlServerHistorian:
    s = p.settings
    assert s.wonderware_host
    return SqlServerHistorian(s.wonderware_host, s.wonderware_port, s.wonderware_database,
                              s.wonderware_username, s.wonderware_password, s.tag_types)  # fmt: skip


def _all_keys(p: Pipeline) -> tuple[str, str]:
    chunks = p.chunks()
    return f"{chunks[0]}|{DAYS[0]}", f"{chunks[-1]}|{DAYS[-1]}"


def _assert_exact(p: Pipeline) -> None:
    expected = stored_points(p.settings.historian_sqlite, COPIED_TAGS, DAYS[0], DAYS[-1])
    assert warehouse_points(p.warehouse, COPIED_TAGS, DAYS[0], DAYS[-1]) == expected


def test_catalog_backfill_and_checks_over_the_wire_are_exact(wired: tuple) -> None:
    p, server = wired
    assert p.materialize_tags().success
    with p.warehouse.connect() as conn:
        catalog = conn.query("SELECT TagName FROM wonderware.WonderwareTags FINAL").column(0)
    assert sorted(catalog.to_pylist()) == COPIED_TAGS
    assert "System2.Flow" in COPIED_TAGS and "SysTimeSec" not in COPIED_TAGS

    result = p.materialize_history(*_all_keys(p))
    assert result.success
    assert server.history_rows_encoded > 0  # the points came over the wire
    _assert_exact(p)
    evaluations = result.get_asset_check_evaluations()
    names = {e.check_name for e in evaluations}
    assert len(names) == 5 and len(evaluations) == 5 * len(p.chunks()) * len(DAYS)
    # Every blocking (ERROR) check passes; of the WARN ones only the quality ratio speaks, on
    # the chunk holding the trap plant's bad-quality tag.
    failing = {(e.check_name, e.severity) for e in evaluations if not e.passed}
    assert failing <= {("history_quality_good_ratio", dg.AssetCheckSeverity.WARN)}
    assert {e.check_name for e in evaluations if e.passed} == names


def test_a_dropped_and_a_stalled_answer_are_retried_and_end_exact(wired: tuple) -> None:
    p, server = wired
    assert p.materialize_tags().success
    server.faults.drop_after_rows = 40
    assert p.materialize_history(*_all_keys(p)).success
    assert server.faults.drop_after_rows is None  # the drop happened
    server.faults.stall_after_rows, server.faults.stall_s = 25, 8.0
    result = p.materialize_history(*_all_keys(p))
    assert result.success
    assert server.faults.stall_after_rows is None
    messages = [e.message for e in p.instance.all_logs(result.run_id)]
    assert any("transient failure" in m for m in messages)
    _assert_exact(p)


def test_a_wrong_password_fails_at_once_naming_the_login(wired: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = wired
    monkeypatch.setenv("WONDERWARE_PASSWORD", "not the password")
    p.reload()
    result = p.materialize_tags()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert f"Login failed for user '{USER}'" in message and "not retried" in message
    assert "not the password" not in message


def test_a_column_the_table_lacks_fails_permanently_naming_it(wired: tuple) -> None:
    """What happened against AVEVA's schema before the catalog query joined `Tag`: 207."""
    p, _ = wired
    conn = store.connect(p.settings.historian_sqlite)
    with conn:
        conn.execute("ALTER TABLE Tag DROP COLUMN Description")
    conn.close()
    historian = _client(p)
    with pytest.raises(HistorianError, match="Invalid column name 'Description'") as error:
        historian.list_tags()
    assert classify(error.value) is Fault.PERMANENT
    result = p.materialize_tags()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "Invalid column name 'Description'" in str(failure.step_failure_data.error)


@pytest.fixture
def recent(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, HistorianTdsServer]]:
    """A 6-tag plant with 3 days up to now behind the TDS front, complete days loaded."""
    now = datetime.now(UTC)
    first = now.date() - timedelta(days=3)
    monkeypatch.setenv("WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN", "0")
    monkeypatch.setenv("WONDERWARE_PIPELINE_RECONCILE_AGES", "1,2,3")
    plant.create_plant(pipeline.settings.historian_sqlite,
                       datetime(first.year, first.month, first.day, tzinfo=UTC), now, n_tags=6)  # fmt: skip
    server = _serve(pipeline.settings.historian_sqlite)
    _point_pipeline_at(server, pipeline, monkeypatch)
    assert pipeline.materialize_tags().success
    chunks, yesterday = pipeline.chunks(), now.date() - timedelta(days=1)
    assert pipeline.materialize_history(f"{chunks[0]}|{first}", f"{chunks[-1]}|{yesterday}").success
    yield pipeline, server
    server.close()


def test_sync_and_reconciliation_over_the_wire(recent: tuple) -> None:
    p, _ = recent
    tags = [t.name for t in _client(p).list_tags()]
    sync = p.defs.resolve_job_def("wonderware_sync_job").execute_in_process(instance=p.instance)
    assert sync.success
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=3)
    until = datetime.now(UTC) + timedelta(hours=1)
    assert warehouse_points_between(p.warehouse, tags, since, until) == stored_points_between(
        p.settings.historian_sqlite, tags, since, until
    )

    late_day = today - timedelta(days=2)
    conn = store.connect(p.settings.historian_sqlite)
    store.add_points(conn, [(tags[0], late_day + timedelta(hours=5, milliseconds=321), 7.0, "7.0",
                             0, 192, 192)])  # fmt: skip
    conn.close()
    reconcile = p.defs.resolve_job_def("wonderware_reconcile_job").execute_in_process(
        instance=p.instance
    )
    differing = reconcile.output_for_node("reconcile_history_counts")
    assert len(differing) == 1 and differing[0].endswith(f"|{late_day.date()}")


# --- one client, two wires ------------------------------------------------------------------


def _parity_pair(path: Path, server: HistorianTdsServer) -> tuple[SqlServerHistorian, EmulatorHistorian]:
    host, port = server.address
    wire = SqlServerHistorian(host, port, "Runtime", USER, PASSWORD, (1, 2, 3), batch_rows=700)
    direct = EmulatorHistorian(path, (1, 2, 3), batch_rows=700)
    return wire, direct


def _table(batches) -> pa.Table:  # type: ignore[no-untyped-def]
    return pa.Table.from_batches(list(batches))


def test_the_wire_and_the_direct_client_return_identical_batches(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    build_trap_plant(path)
    server = _serve(path)
    try:
        wire, direct = _parity_pair(path, server)
        assert wire.list_tags() == direct.list_tags()
        assert {t.name for t in wire.list_tags()} == set(COPIED_TAGS)
        tags = [t.name for t in TRAP_TAGS]
        for first in DAYS:  # midnight ±1 ms, the DST day, empty days for some tags
            start = datetime(first.year, first.month, first.day, tzinfo=UTC)
            end = start + timedelta(days=1)
            got, want = _table(wire.read_history(tags, start, end)), _table(direct.read_history(tags, start, end))
            assert got.schema == want.schema
            assert got.num_rows == want.num_rows > 0
            assert got.equals(want), first
            assert wire.count_points(tags, start, end) == direct.count_points(tags, start, end)
    finally:
        server.close()


def test_more_tags_than_one_in_list_holds_are_read_in_groups(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    start = datetime(2025, 6, 1, tzinfo=UTC)
    summary = plant.create_plant(path, start, start + timedelta(minutes=20), n_tags=MAX_TAGS_PER_QUERY + 40)
    server = _serve(path)
    try:
        wire, direct = _parity_pair(path, server)
        tags = list(summary.tag_names)
        got = _table(wire.read_history(tags, start, start + timedelta(hours=1)))
        want = _table(direct.read_history(tags, start, start + timedelta(hours=1)))
        assert got.num_rows == want.num_rows > 0
        key = [("TagName", "ascending"), ("DateTime", "ascending")]
        assert got.sort_by(key).equals(want.sort_by(key))
        assert sum(wire.count_points(tags, start, start + timedelta(hours=1)).values()) == got.num_rows
    finally:
        server.close()


# --- timestamps finer than the copy keeps ---------------------------------------------------


def _row(tag: str, moment: datetime) -> tuple:
    return (moment, tag, 1.0, "1.0", 0, 192, 192, 1, *([None] * 16), moment, *([None] * 8))


def test_sub_millisecond_points_load_unless_two_share_a_millisecond() -> None:
    last_ms = datetime(2025, 11, 1, 23, 59, 59, 999_000)
    # datetime2(7) can carry 100 ns: such a point keeps its millisecond, and so its day
    single = rows_to_batch([_row("A", last_ms + timedelta(microseconds=600))])
    assert single.column("DateTime")[0].as_py() == last_ms.replace(tzinfo=UTC)
    # points of two tags in one millisecond are two keys
    both = rows_to_batch([_row("A", last_ms), _row("B", last_ms + timedelta(microseconds=5))])
    assert both.num_rows == 2
    # two points of one tag in one millisecond would become one key: refused, naming them
    with pytest.raises(HistorianError, match=r"tag 'Tank 1' has 2 points within the "
                       r"millisecond 2025-11-01 23:59:59\.999 UTC"):
        rows_to_batch([_row("Tank 1", last_ms), _row("Tank 1", last_ms + timedelta(microseconds=400))])


# --- ww simulate serve, as a user runs it ---------------------------------------------------


def test_ww_simulate_serve_is_what_doctor_and_a_backfill_reach(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess

    from ww_assets_tests.conftest import REPO, free_port
    from ww_assets_tests.services.processes import BIN, service_env

    home = tmp_path / "ww"
    env = service_env({"WW_HOME": str(home)})
    assert subprocess.run([str(BIN / "ww"), "simulate", "create", "--days", "1", "--tags", "9"],
                          env=env, cwd=REPO, capture_output=True).returncode == 0  # fmt: skip
    refused = subprocess.run([str(BIN / "ww"), "simulate", "serve"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "set WONDERWARE_USERNAME and WONDERWARE_PASSWORD" in refused.stderr

    port = free_port()
    login = {"WONDERWARE_USERNAME": USER, "WONDERWARE_PASSWORD": PASSWORD}
    server = subprocess.Popen([str(BIN / "ww"), "simulate", "serve", "--port", str(port)],
                              env={**env, **login}, cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert f"on 127.0.0.1:{port}" in (server.stdout.readline() if server.stdout else "")
        wired = {**env, **login, "WONDERWARE_HOST": "127.0.0.1", "WONDERWARE_PORT": str(port)}
        doctor = subprocess.run([str(BIN / "ww"), "doctor"], env=wired, cwd=REPO,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        historian_line = next(line for line in doctor.stdout.splitlines() if line.startswith("historian"))
        assert "ok" in historian_line and f"127.0.0.1:{port}" in historian_line, doctor.stdout
        wrong = subprocess.run([str(BIN / "ww"), "doctor"], env={**wired, "WONDERWARE_PASSWORD": "no"},
                               cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert wrong.returncode == 1 and f"Login failed for user '{USER}'" in wrong.stdout
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    with pytest.raises(OSError):  # the port is closed again
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
