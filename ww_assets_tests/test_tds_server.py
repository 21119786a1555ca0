"""The emulator's SQL Server front: real pymssql against `tds_server` on a free port."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pymssql
import pytest
from pysqlbridge.logins import Login, LoginStore
from pysqlbridge.server import start_background as start_bare_server
from pysqlbridge.tds.result import Column, QueryError, QueryResult

from ww_assets.emulator.history import HistorianEmulator
from ww_assets.emulator.plant import AWKWARD_TAGS, create_plant
from ww_assets.emulator.tds_server import (
    DateTime2,
    Faults,
    HistorianTdsServer,
    encode_datetime2,
    start_background,
)
from ww_assets.emulator.tsql import HistorySelect, parse_batch
from ww_assets.history_query import (
    HistoryQuery,
    render_count_tsql,
    render_history_tsql,
    window_query,
)
from ww_assets.schema import HISTORY_COLUMNS

USER, PASSWORD = "ww_reader", "s3cret;'pw"
# 2025-11-02 is the autumn DST change in America/Chicago: 01:00-02:00 local happens twice.
PLANT_START, PLANT_END = datetime(2025, 11, 1), datetime(2025, 11, 4)
DST_DAY = (datetime(2025, 11, 2), datetime(2025, 11, 3))
ODD_TAGS = ("Operator's.Note", "Line2;Speed", "Pump--3.Flow", "Kühlwasser.Temperatur")


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tds") / "historian.sqlite"
    create_plant(path, PLANT_START, PLANT_END, n_tags=14)
    return path


@pytest.fixture(scope="module")
def tags(plant: Path) -> tuple[str, ...]:
    conn = sqlite3.connect(plant)
    try:
        return tuple(sorted(row[0] for row in conn.execute("SELECT TagName FROM TagRef")))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(plant: Path) -> Iterator[HistorianTdsServer]:
    server, _ = start_background(plant, user=USER, password=PASSWORD, batch_rows=500)
    yield server
    server.close()


def connect(
    server: HistorianTdsServer, password: str = PASSWORD, **kwargs: object
) -> pymssql.Connection:
    host, port = server.address
    options: dict[str, object] = {"login_timeout": 10, "timeout": 60} | kwargs
    return pymssql.connect(
        server=host, port=str(port), user=USER, password=password, database="Runtime",
        **options,
    )  # fmt: skip


def fetch(
    server: HistorianTdsServer, sql: str, params: tuple = (), **kwargs: object
) -> list[tuple]:
    conn = connect(server, **kwargs)
    try:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        conn.close()


def error_number(error: pymssql.Error) -> int:
    """SQL Server's error number: pymssql nests (number, text) in a failed connect's args."""
    first = error.args[0]
    return first[0] if isinstance(first, tuple) else first


def emulator_rows(plant: Path, query: HistoryQuery) -> list[tuple]:
    return [row for batch in HistorianEmulator(plant).query(query) for row in batch]


def test_login_select_1_and_transactions(server: HistorianTdsServer) -> None:
    conn = connect(server)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchall() == [(1,)]
        conn.commit()  # IF @@TRANCOUNT > 0 COMMIT TRAN, then BEGIN TRAN again
        conn.rollback()
        cursor.execute("SELECT 2 AS two")
        assert cursor.fetchall() == [(2,)] and cursor.description[0][0] == "two"
    finally:
        conn.close()


def test_wrong_password_is_refused_as_sql_server_does(server: HistorianTdsServer) -> None:
    with pytest.raises(pymssql.OperationalError) as raised:
        connect(server, password="wrong")
    assert error_number(raised.value) == 18456  # pymssql keeps the text only sometimes


def test_catalog_query_with_a_join_runs_on_the_store(
    server: HistorianTdsServer, plant: Path
) -> None:
    sql = (
        "SELECT r.TagName, a.MinEU, a.MaxEU FROM dbo.TagRef r "
        "JOIN AnalogTag a ON a.TagName = r.TagName WHERE r.TagType = %s AND r.TagName <> %s "
        "ORDER BY r.TagName"
    )
    got = fetch(server, sql, (1, "it's; --"))
    conn = sqlite3.connect(plant)
    try:
        expected = conn.execute(
            "SELECT r.TagName, a.MinEU, a.MaxEU FROM TagRef r JOIN AnalogTag a "
            "ON a.TagName = r.TagName WHERE r.TagType = 1 ORDER BY r.TagName"
        ).fetchall()
    finally:
        conn.close()
    assert got == expected and len(got) > 3


@pytest.mark.parametrize(
    ("sql", "number", "named"),
    [
        ("SELECT t.NoSuchColumn FROM TagRef t", 207, "Invalid column name 'NoSuchColumn'."),
        ("SELECT TagName FROM Runtime.dbo.NoSuchTable", 208, "Invalid object name 'NoSuchTable'."),
        ("SELECT count(*) FROM Points", 208, "Invalid object name 'Points'."),
        (
            "SELECT DateTime, Bogus FROM History WHERE TagName = 'x' "
            "AND DateTime > '2025-11-01' AND DateTime < '2025-11-02'",
            207,
            "Invalid column name 'Bogus'.",
        ),
        ("SELECT DateTime FROM History", 50000, "needs a WHERE clause"),
        (
            "SELECT DateTime FROM History WHERE DateTime > '2025-11-01 00:00:00.000' "
            "AND DateTime < '2025-11-02 00:00:00.000'",
            50000,
            "must name its tags",
        ),
        (
            "SELECT DateTime FROM History WHERE TagName = 'x' AND DateTime > '2025-11-01 00:00' "
            "AND DateTime < '2025-11-02 00:00' AND wwRetrievalMode = 'Cyclic'",
            50000,
            "retrieval mode Cyclic is not emulated",
        ),
        ("DELETE FROM TagRef", 50000, "read-only"),
        (
            "SELECT TOP 5 DateTime FROM History WHERE TagName = 'x' "
            "AND DateTime > '2025-11-01' AND DateTime < '2025-11-02'",
            50000,
            "does not answer TOP on History",
        ),
        (
            "SELECT h.DateTime FROM History h JOIN TagRef t ON t.TagName = h.TagName "
            "WHERE h.TagName = 'x' AND h.DateTime > '2025-11-01' AND h.DateTime < '2025-11-02'",
            50000,
            "does not answer JOIN on History",
        ),
        (
            "SELECT DateTime FROM History WHERE TagName = 'x' OR TagName = 'y' "
            "AND DateTime > '2025-11-01' AND DateTime < '2025-11-02'",
            50000,
            "does not support this History predicate",
        ),
        ("SELECT 'unterminated FROM TagRef", 102, "Incorrect syntax"),
    ],
)
def test_refusals_are_errors_naming_the_cause(
    server: HistorianTdsServer, sql: str, number: int, named: str
) -> None:
    conn = connect(server)
    try:
        cursor = conn.cursor()
        with pytest.raises(pymssql.Error) as raised:
            cursor.execute(sql)
        assert error_number(raised.value) == number
        assert named in str(raised.value)
        cursor.execute("SELECT 1")  # the session survives a failed query
        assert cursor.fetchall() == [(1,)]
    finally:
        conn.close()


def _same_values_and_types(got: list[tuple], expected: list[tuple]) -> None:
    assert len(got) == len(expected)
    for got_row, expected_row in zip(got, expected):
        assert got_row == expected_row
        assert [type(v) for v in got_row] == [type(v) for v in expected_row]


@pytest.mark.parametrize("mode", ["Full", "Delta"])
@pytest.mark.parametrize("inclusive", [True, False])
@pytest.mark.parametrize("time_zone", ["UTC", None])
def test_history_select_returns_the_emulators_rows(
    server: HistorianTdsServer,
    plant: Path,
    tags: tuple[str, ...],
    mode: str,
    inclusive: bool,
    time_zone: str | None,
) -> None:
    query = HistoryQuery(
        tags=(*ODD_TAGS, *tags[-3:], "No.Such.Tag"),
        start=DST_DAY[0],
        end=DST_DAY[1],
        start_inclusive=inclusive,
        retrieval_mode=mode,
        time_zone=time_zone,
    )
    expected = emulator_rows(plant, query)
    got = fetch(server, *render_history_tsql(query))
    assert len(got[0]) == len(HISTORY_COLUMNS) == 33
    _same_values_and_types(got, expected)
    assert len(expected) > 500
    if time_zone is None:  # the autumn hour repeats in local time
        moments = [row[0] for row in got if row[1] == ODD_TAGS[1]]
        assert any(b < a for a, b in zip(moments, moments[1:]))

    counts = dict(fetch(server, *render_count_tsql(query)))
    expected_counts: dict[str, int] = {}
    for row in expected:
        expected_counts[row[1]] = expected_counts.get(row[1], 0) + 1
    assert counts == expected_counts


def test_pipeline_window_count_equals_its_rows(
    server: HistorianTdsServer, plant: Path, tags: tuple[str, ...]
) -> None:
    """The reads the pipeline sends (Full, exclusive start 1 ms early, UTC) and their count."""
    query = window_query(tags, DST_DAY[0], DST_DAY[1])
    got = fetch(server, *render_history_tsql(query))
    _same_values_and_types(got, emulator_rows(plant, query))
    counts = dict(fetch(server, *render_count_tsql(query)))
    assert sum(counts.values()) == len(got) > 1000
    assert counts == {tag: sum(1 for row in got if row[1] == tag) for tag in counts}


def test_selected_columns_and_aliases_in_order(
    server: HistorianTdsServer, plant: Path
) -> None:
    query = window_query(ODD_TAGS, DST_DAY[0], DST_DAY[1])
    conn = connect(server)
    try:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT OPCQuality AS q, vValue, DateTime FROM Runtime.dbo.History "
            "WHERE TagName IN (%s, %s, %s, %s) AND DateTime > %s AND DateTime < %s "
            "AND wwRetrievalMode = 'Full' AND wwTimeZone = 'UTC'",
            (*ODD_TAGS, "2025-11-01T23:59:59.9990000", "2025-11-03T00:00:00"),
        )
        got = cursor.fetchall()
        assert [d[0] for d in cursor.description] == ["q", "vValue", "DateTime"]
    finally:
        conn.close()
    assert got == [(row[6], row[3], row[0]) for row in emulator_rows(plant, query)]


@pytest.mark.parametrize("tag", ODD_TAGS)
def test_odd_tag_names_round_trip(server: HistorianTdsServer, tag: str) -> None:
    rows = fetch(
        server,
        "SELECT TagName, DateTime FROM History WHERE TagName = %s AND DateTime >= %s "
        "AND DateTime < %s AND wwRetrievalMode = 'Full' AND wwTimeZone = 'UTC'",
        (tag, "2025-11-02 00:00:00.000", "2025-11-03 00:00:00.000"),
    )
    assert rows and {row[0] for row in rows} == {tag}
    assert tag in {t.name for t in AWKWARD_TAGS}


def test_datetime2_carries_microseconds_to_pymssql() -> None:
    """The datetime2(7) encoding, read back by pymssql (TDS 7.4, its default)."""
    moments = [
        datetime(2026, 3, 8, 1, 2, 3, 456789),
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        None,
    ]

    def handler(request: object) -> QueryResult:
        if not getattr(request, "sql", "").upper().startswith("SELECT"):
            return QueryResult(columns=[], rows=[])
        return QueryResult(columns=[Column("d", DateTime2())], rows=[[m] for m in moments])

    server, _ = start_bare_server(
        query_handler=handler, logins=LoginStore([Login(USER, PASSWORD, hashed=False)])
    )
    try:
        host, port = server.address
        conn = pymssql.connect(server=host, port=str(port), user=USER, password=PASSWORD)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT d")
            assert [row[0] for row in cursor.fetchall()] == moments
        finally:
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert encode_datetime2(datetime(1, 1, 2, 0, 0, 0, 1)) == bytes([8, 10, 0, 0, 0, 0, 1, 0, 0])


def test_down_level_client_gets_datetime2_as_text(server: HistorianTdsServer) -> None:
    """Below TDS 7.3 (no datetime2 on the wire) SQL Server sends the value as text."""
    rows = fetch(
        server,
        "SELECT DateTime FROM History WHERE TagName = %s AND DateTime >= %s AND DateTime < %s "
        "AND wwRetrievalMode = 'Full' AND wwTimeZone = 'UTC'",
        (ODD_TAGS[1], "2025-11-02 00:00:00.000", "2025-11-03 00:00:00.000"),
        tds_version="7.2",
    )
    assert rows[0][0] == "2025-11-02 00:00:00.0000000"


@pytest.mark.parametrize(
    ("literal", "op", "expected"),
    [
        ("'2025-11-02 01:02:03.456'", ">=", datetime(2025, 11, 2, 1, 2, 3, 456000)),
        ("'2025-11-02T01:02:03.1234560'", ">=", datetime(2025, 11, 2, 1, 2, 3, 123456)),
        # a 7th digit: `>=` rounds up to the next whole microsecond, `>` cuts
        ("'2025-11-02T01:02:03.1234567'", ">=", datetime(2025, 11, 2, 1, 2, 3, 123457)),
        ("'2025-11-02T01:02:03.1234567'", ">", datetime(2025, 11, 2, 1, 2, 3, 123456)),
        ("N'2025-11-02T23:59:59.9999999'", ">", datetime(2025, 11, 2, 23, 59, 59, 999999)),
        ("N'2025-11-02T23:59:59.9999999'", ">=", datetime(2025, 11, 3)),
        ("N'2025-11-02T01:02:03'", ">=", datetime(2025, 11, 2, 1, 2, 3)),
        ("'2025-11-02 01:02'", ">", datetime(2025, 11, 2, 1, 2)),
        ("'2025-11-02'", ">", datetime(2025, 11, 2)),
    ],
)
def test_datetime_literals(literal: str, op: str, expected: datetime) -> None:
    statement = parse_batch(
        f"SELECT DateTime FROM History WHERE TagName = N'a' AND DateTime {op} {literal} "
        "AND DateTime <= '2026-01-01'"
    )
    assert isinstance(statement, HistorySelect)
    assert statement.query.start == expected and statement.query.start_inclusive == (op == ">=")
    assert statement.query.end_inclusive and statement.query.time_zone is None


@pytest.mark.parametrize("literal", ["'02/11/2025 01:02'", "'2025-13-01'", "'yesterday'", "3"])
def test_bad_datetime_literals_are_refused(literal: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse_batch(
            f"SELECT DateTime FROM History WHERE TagName = N'a' AND DateTime > {literal} "
            "AND DateTime < '2026-01-01'"
        )
    assert raised.value.number in (241, 242, 50000)
    assert literal.strip("'") in str(raised.value)


def _history_sql(tags: tuple[str, ...]) -> tuple[str, tuple]:
    return render_history_tsql(window_query(tags, PLANT_START, PLANT_END))


def test_injected_drop_fails_the_read_once(plant: Path, tags: tuple[str, ...]) -> None:
    server, _ = start_background(
        plant, user=USER, password=PASSWORD, batch_rows=300, faults=Faults(drop_after_rows=1000)
    )
    try:
        small = window_query(ODD_TAGS[:1], DST_DAY[0], DST_DAY[0] + timedelta(hours=2))
        small_rows = fetch(server, *render_history_tsql(small))
        assert 0 < len(small_rows) < 1000  # an answer that does not reach the fault's rows
        conn = connect(server)
        try:
            cursor = conn.cursor()
            with pytest.raises(pymssql.Error):
                cursor.execute(*_history_sql(tags))
                cursor.fetchall()
        finally:
            conn.close()
        rows = fetch(server, *_history_sql(tags))  # disarmed: the retry reads everything
        assert len(rows) == len(emulator_rows(plant, window_query(tags, PLANT_START, PLANT_END)))
    finally:
        server.close()


def test_injected_stall_times_the_client_out_once(plant: Path, tags: tuple[str, ...]) -> None:
    server, _ = start_background(
        plant, user=USER, password=PASSWORD, batch_rows=300,
        faults=Faults(stall_after_rows=1000, stall_s=30.0),
    )  # fmt: skip
    try:
        conn = connect(server, timeout=2)
        try:
            cursor = conn.cursor()
            with pytest.raises(pymssql.Error):
                cursor.execute(*_history_sql(tags))
                cursor.fetchall()
        finally:
            conn.close()
        assert len(fetch(server, *_history_sql(tags), timeout=60)) > 1000
    finally:
        server.close()


@pytest.fixture(scope="module")
def big_plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 500k stored points (80 tags, 3 days): a 120 MB answer."""
    path = tmp_path_factory.mktemp("tds_big") / "historian.sqlite"
    create_plant(path, PLANT_START, PLANT_END, n_tags=80)
    return path


def test_a_large_answer_is_streamed(big_plant: Path) -> None:
    """The first rows reach the client while the server has encoded only part of the answer:
    the rest waits in the emulator, not in server memory (loopback TCP buffers hold at most
    about 36 MB here, 150k rows; the answer is about 120 MB)."""
    conn = sqlite3.connect(big_plant)
    try:
        tags = tuple(row[0] for row in conn.execute("SELECT TagName FROM TagRef"))
        total = conn.execute("SELECT count(*) FROM Points").fetchone()[0]
    finally:
        conn.close()
    server, _ = start_background(big_plant, user=USER, password=PASSWORD)
    try:
        client = connect(server)
        try:
            cursor = client.cursor()
            cursor.execute(*_history_sql(tags))
            first = cursor.fetchmany(1000)
            assert len(first) == 1000
            assert server.history_rows_encoded < total // 2
            read = len(first)
            while rows := cursor.fetchmany(50_000):
                read += len(rows)
        finally:
            client.close()
        assert read == total == server.history_rows_encoded
    finally:
        server.close()



def test_serve_runs_until_interrupted(plant: Path, tags: tuple[str, ...]) -> None:
    """`serve` as the CLI runs it: in its own process, ready once it accepts logins, and gone
    after an interrupt."""
    code = (
        "import sys; from ww_assets.emulator.tds_server import serve\n"
        "try:\n"
        "    serve(sys.argv[1], user=sys.argv[2], password=sys.argv[3],\n"
        "          ready=lambda address: print(address[1], flush=True))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(plant), USER, PASSWORD],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(process.stdout.readline())  # type: ignore[union-attr]
        conn = pymssql.connect(
            server="127.0.0.1", port=str(port), user=USER, password=PASSWORD, login_timeout=10
        )
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT count(*) FROM TagRef")
            assert cursor.fetchall() == [(len(tags),)]
        finally:
            conn.close()
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert out.strip() == "interrupted" and process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_empty_history_answer_still_declares_its_columns(server: HistorianTdsServer) -> None:
    conn = connect(server)
    try:
        cursor = conn.cursor()
        cursor.execute(*render_history_tsql(window_query(("No.Such.Tag",), *DST_DAY)))
        assert cursor.fetchall() == []
        assert [d[0] for d in cursor.description] == [c.name for c in HISTORY_COLUMNS]
    finally:
        conn.close()


def test_an_encrypted_session_streams_history(
    server: HistorianTdsServer, plant: Path, tags: tuple[str, ...]
) -> None:
    """`encryption='require'` keeps the TLS tunnel for the whole session (not only the login):
    the streamed packets go through it too."""
    query = window_query(tags, *DST_DAY)
    got = fetch(server, *render_history_tsql(query), encryption="require")
    _same_values_and_types(got, emulator_rows(plant, query))
