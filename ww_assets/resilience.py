"""Fault handling: which failures are worth retrying, backoff, and a circuit breaker.

The replaced system retried everything three times and guarded only connection creation.
Here a failure is classified explicitly: transient faults (a dropped connection,
a timeout, an overloaded ClickHouse, a deadlock, the emulator's SQLite file locked by a
writer) are retried with exponential backoff and jitter; permanent ones (bad credentials, an
unknown database or table, bad configuration, a schema mismatch) fail at once. No Dagster import.
"""

from __future__ import annotations

import enum
import fcntl
import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Fault(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


# SQL Server / FreeTDS message numbers (pymssql puts them in args[0]).
MSSQL_TRANSIENT = {
    1205,  # deadlock victim
    20002,  # connection failed
    20003,  # adaptive server connection timed out
    20004,  # read from the server failed
    20006,  # write to the server failed
    20009,  # unable to connect: server unavailable or does not exist
    20017,  # unexpected EOF from the server
    20047,  # DBPROCESS is dead or not enabled
    10054,  # connection reset
    40613,  # database unavailable (failover)
}
MSSQL_PERMANENT = {
    18456,  # login failed
    4060,  # cannot open database
    208,  # invalid object name
    207,  # invalid column name
    229,  # permission denied
    102,  # syntax error
    245,  # conversion failed
}
# ClickHouse error codes ("Code: N." in the message).
CLICKHOUSE_TRANSIENT = {
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY (replica catching up)
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
}
CLICKHOUSE_PERMANENT = {
    47,  # UNKNOWN_IDENTIFIER
    53,  # TYPE_MISMATCH
    60,  # UNKNOWN_TABLE
    62,  # SYNTAX_ERROR
    81,  # UNKNOWN_DATABASE
    192,  # UNKNOWN_USER
    193,  # WRONG_PASSWORD
    497,  # ACCESS_DENIED
    516,  # AUTHENTICATION_FAILED
}
_CH_CODE = re.compile(r"Code: (\d+)\.")
_SQLITE_BUSY = re.compile(r"database( table)? is (locked|busy)")


def classify(error: BaseException) -> Fault:
    """Transient (worth retrying) or permanent (fail now), looking through the cause chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _classify_one(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return Fault.PERMANENT  # unknown failures are not retried: no retry storms


def _classify_one(error: BaseException) -> Fault | None:
    if isinstance(error, CircuitOpenError):
        return Fault.TRANSIENT
    # ValueError includes config.ConfigError: a bad setting is never retried.
    if isinstance(error, (ValueError, TypeError, KeyError)):
        return Fault.PERMANENT
    if isinstance(error, (TimeoutError, ConnectionError)):
        return Fault.TRANSIENT
    module = type(error).__module__ or ""
    if module.startswith(("pymssql", "_mssql")):
        codes = mssql_codes(error)
        if codes & MSSQL_PERMANENT:
            return Fault.PERMANENT
        if codes & MSSQL_TRANSIENT:
            return Fault.TRANSIENT
        return None
    if module.startswith("redis"):
        return Fault.TRANSIENT
    match = _CH_CODE.search(str(error))
    if match:
        code = int(match.group(1))
        if code in CLICKHOUSE_PERMANENT:
            return Fault.PERMANENT
        if code in CLICKHOUSE_TRANSIENT:
            return Fault.TRANSIENT
    if "Cannot lock file" in str(error):  # another process holds embedded ClickHouse
        return Fault.TRANSIENT
    if isinstance(error, sqlite3.OperationalError) and _SQLITE_BUSY.search(str(error)):
        return Fault.TRANSIENT  # the emulator's writer (a live plant) held the lock too long
    if isinstance(error, OSError):
        return Fault.TRANSIENT
    return None


_MSSQL_CODE = re.compile(r"(?:error message|Msg) (\d+)")


def mssql_codes(error: BaseException) -> set[int]:
    """Message numbers of a pymssql error: `args[0]` is a number or (number, message bytes),
    and FreeTDS lists every DB-Lib message it saw in the text."""
    codes: set[int] = set()
    first = error.args[0] if error.args else None
    if isinstance(first, tuple) and first:
        first = first[0]
    if isinstance(first, int):
        codes.add(first)
    codes.update(int(code) for code in _MSSQL_CODE.findall(str(error)))
    return codes


@dataclass(frozen=True)
class Backoff:
    attempts: int = 3
    base_s: float = 1.0
    max_s: float = 30.0
    jitter: float = 0.5
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1-based)."""
        base = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return base * factor


def retry_transient(
    action: Callable[[], T],
    backoff: Backoff,
    *,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`; on a transient failure wait and try again, up to `backoff.attempts` times.

    Permanent failures and the last transient one propagate unchanged.
    """
    attempt = 0
    while True:
        try:
            return action()
        except Exception as error:
            attempt += 1
            if classify(error) is Fault.PERMANENT or attempt >= backoff.attempts:
                raise
            wait = backoff.delay(attempt)
            if on_retry:
                on_retry(attempt, wait, error)
            sleep(wait)


class CircuitOpenError(RuntimeError):
    """The circuit breaker is open: calls fail fast until the reset time has passed."""


class CircuitBreaker:
    """Consecutive-failure breaker whose state lives in a small JSON file, so every process of
    a run (each Dagster step is one) and every run on this machine share it.

    Closed: calls pass; `threshold` consecutive transient failures open it. Open: calls fail
    at once with `CircuitOpenError` for `reset_s`. Then half-open: one call probes; success
    closes the breaker, failure opens it again.
    """

    def __init__(self, path: Path, name: str, threshold: int = 5, reset_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.name = name
        self.threshold = threshold
        self.reset_s = reset_s
        self.clock = clock

    def call(self, action: Callable[[], T]) -> T:
        self._before()
        try:
            result = action()
        except Exception as error:
            if classify(error) is Fault.TRANSIENT:
                self._record(failed=True)
            raise
        self._record(failed=False)
        return result

    def state(self) -> str:
        data = self._load()
        if data["opened_at"] is None:
            return "closed"
        return "open" if self.clock() - data["opened_at"] < self.reset_s else "half-open"

    def _before(self) -> None:
        with self._locked() as data:
            opened = data["opened_at"]
            if opened is None:
                return
            waited = self.clock() - opened
            if waited < self.reset_s:
                raise CircuitOpenError(
                    f"circuit breaker for {self.name} is open after {data['failures']} "
                    f"consecutive failures; retrying in {self.reset_s - waited:.0f} s"
                )
            if data.get("probing_since") and self.clock() - data["probing_since"] < self.reset_s:
                raise CircuitOpenError(
                    f"circuit breaker for {self.name} is half-open and another call is probing"
                )
            data["probing_since"] = self.clock()

    def _record(self, failed: bool) -> None:
        with self._locked() as data:
            if failed:
                data["failures"] += 1
                if data["failures"] >= self.threshold or data["opened_at"] is not None:
                    data["opened_at"] = self.clock()
            else:
                data.update(failures=0, opened_at=None)
            data["probing_since"] = None

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {"failures": 0, "opened_at": None, "probing_since": None}

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        """The state, read and (if changed) written back under an exclusive file lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            data = self._load()
            unchanged = dict(data)
            yield data
            if data != unchanged:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data))
                tmp.replace(self.path)
