"""Failure classification, backoff and the circuit breaker, with real pymssql failures."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pymssql
import pytest
import redis

from ww_assets.config import ConfigError
from ww_assets.resilience import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    Fault,
    classify,
    retry_transient,
)
from ww_assets.warehouse import WarehouseError
from ww_assets_tests.conftest import free_port


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A local TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def _pymssql_error(port: int) -> pymssql.Error:
    with pytest.raises(pymssql.Error) as caught:
        pymssql.connect(server="127.0.0.1", port=str(port), user="u", password="p",
                        database="Runtime", login_timeout=1, timeout=1)
    return caught.value


def test_closed_and_stalled_sql_server_are_transient(stalled_port: int) -> None:
    assert classify(_pymssql_error(free_port())) is Fault.TRANSIENT
    assert classify(_pymssql_error(stalled_port)) is Fault.TRANSIENT


@pytest.mark.parametrize(
    "error, fault",
    [
        (pymssql.OperationalError((18456, b"Login failed for user 'x'.")), Fault.PERMANENT),
        (pymssql.OperationalError((4060, b"Cannot open database \"Runtime\"")), Fault.PERMANENT),
        (pymssql.ProgrammingError((208, b"Invalid object name 'History'.")), Fault.PERMANENT),
        (pymssql.OperationalError((1205, b"deadlock victim")), Fault.TRANSIENT),
        (WarehouseError("Code: 202. DB::Exception: Too many simultaneous queries"), Fault.TRANSIENT),
        (WarehouseError("Code: 81. DB::Exception: Database nope does not exist"), Fault.PERMANENT),
        (WarehouseError("Code: 516. DB::Exception: default: Authentication failed"), Fault.PERMANENT),
        (WarehouseError("Code: 53. DB::Exception: Type mismatch"), Fault.PERMANENT),
        (redis.ConnectionError("Connection refused"), Fault.TRANSIENT),
        (ConnectionResetError(104, "reset"), Fault.TRANSIENT),
        (TimeoutError(), Fault.TRANSIENT),
        (ConfigError("WONDERWARE_PORT='x' is not a whole number"), Fault.PERMANENT),
        (CircuitOpenError("open"), Fault.TRANSIENT),
        (RuntimeError("something nobody classified"), Fault.PERMANENT),
    ],
)
def test_classification_is_explicit(error: BaseException, fault: Fault) -> None:
    assert classify(error) is fault


def test_classification_follows_the_cause_chain() -> None:
    try:
        try:
            raise pymssql.OperationalError((20009, b"Unable to connect"))
        except pymssql.Error as inner:
            raise RuntimeError("historian query failed") from inner
    except RuntimeError as outer:
        assert classify(outer) is Fault.TRANSIENT


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    backoff = Backoff(attempts=6, base_s=1.0, max_s=10.0, jitter=0.5)
    rng = random.Random(1)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert base * 0.5 <= min(delays) and max(delays) <= base * 1.5
        assert max(delays) - min(delays) > base * 0.5  # jitter really spreads the delays


def test_retry_transient_retries_then_succeeds_and_reports_each_wait() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    result = retry_transient(flaky, Backoff(attempts=5, base_s=0.5), sleep=waits.append)
    assert result == "ok" and len(calls) == 3
    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.75 and 0.5 <= waits[1] <= 1.5


def test_retry_transient_gives_up_after_the_attempts_and_never_retries_permanent() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise TimeoutError("stalled")

    with pytest.raises(TimeoutError):
        retry_transient(down, Backoff(attempts=3), sleep=waits.append)
    assert len(calls) == 3 and len(waits) == 2

    def login_failed() -> None:
        calls.append(1)
        raise pymssql.OperationalError((18456, b"Login failed"))

    calls.clear()
    with pytest.raises(pymssql.OperationalError):
        retry_transient(login_failed, Backoff(attempts=5), sleep=waits.append)
    assert len(calls) == 1


def test_breaker_opens_fails_fast_half_opens_and_closes(tmp_path: Path) -> None:
    now = [1000.0]
    breaker = CircuitBreaker(tmp_path / "b.json", "historian X", threshold=3, reset_s=60,
                             clock=lambda: now[0])
    peer = CircuitBreaker(tmp_path / "b.json", "historian X", threshold=3, reset_s=60,
                          clock=lambda: now[0])  # another step's process, same state file

    def down() -> None:
        raise _pymssql_error(free_port())

    for _ in range(3):
        with pytest.raises(pymssql.Error):
            breaker.call(down)
    assert peer.state() == "open"
    calls: list[int] = []
    with pytest.raises(CircuitOpenError, match="historian X is open after 3"):
        peer.call(lambda: calls.append(1))
    assert calls == []  # failed fast: the call never ran

    now[0] += 61
    assert breaker.state() == "half-open"
    with pytest.raises(pymssql.Error):  # the probe fails: open again
        breaker.call(down)
    assert breaker.state() == "open"
    now[0] += 61
    assert peer.call(lambda: "up") == "up"  # the probe succeeds: closed
    assert breaker.state() == "closed"


def test_breaker_ignores_permanent_failures(tmp_path: Path) -> None:
    breaker = CircuitBreaker(tmp_path / "b.json", "h", threshold=1)
    with pytest.raises(pymssql.OperationalError):
        breaker.call(lambda: (_ for _ in ()).throw(pymssql.OperationalError((18456, b"Login"))))
    assert breaker.state() == "closed"


def test_breaker_counts_history_reads_against_a_closed_port(tmp_path: Path) -> None:
    """read_history is a generator: the breaker must guard its first fetch (where pymssql
    connects), not the creation of the generator, or a dead server never opens it."""
    from datetime import datetime

    from ww_assets.historian import GuardedHistorian, SqlServerHistorian

    client = SqlServerHistorian("127.0.0.1", free_port(), "Runtime", "u", "p", (1,),
                                login_timeout_s=1, query_timeout_s=1)
    breaker = CircuitBreaker(tmp_path / "b.json", "historian X", threshold=3, reset_s=60)
    guarded = GuardedHistorian(client, breaker)
    window = (datetime(2025, 6, 1), datetime(2025, 6, 2))
    for _ in range(3):
        with pytest.raises(Exception) as raised:
            list(guarded.read_history(["Tank.Level"], *window))
        assert classify(raised.value) is Fault.TRANSIENT
    assert breaker.state() == "open"
    with pytest.raises(CircuitOpenError, match="open after 3"):
        list(guarded.read_history(["Tank.Level"], *window))


def test_a_locked_sqlite_file_is_transient_and_retried_until_the_writer_lets_go(
    tmp_path: Path,
) -> None:
    """The emulator's SQLite file held by a writer (a live plant, `ww simulate`) for longer
    than a reader waits: "database is locked" is retried, not a permanent failure."""
    path = tmp_path / "locked.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("INSERT INTO t VALUES (1)")
    writer.execute("BEGIN EXCLUSIVE")
    attempts: list[BaseException] = []

    def read() -> int:
        reader = sqlite3.connect(path, timeout=0)
        try:
            return reader.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            reader.close()

    def on_retry(attempt: int, wait: float, error: BaseException) -> None:
        attempts.append(error)
        writer.execute("COMMIT")  # the writer's transaction ends while the reader waits

    assert retry_transient(read, Backoff(attempts=3, base_s=0), on_retry=on_retry,
                           sleep=lambda s: None) == 1  # fmt: skip
    assert len(attempts) == 1 and "database is locked" in str(attempts[0])
    assert classify(attempts[0]) is Fault.TRANSIENT
    writer.close()
    missing = sqlite3.connect(path)
    with pytest.raises(sqlite3.OperationalError) as caught:
        missing.execute("SELECT * FROM no_such_table")
    missing.close()
    assert classify(caught.value) is Fault.PERMANENT  # only the lock is worth waiting for
