"""The load this tool puts on the historian: queries, rows returned and seconds per kind.

`MeteredHistorian` wraps any `HistorianClient` (as `GuardedHistorian` does) and counts every
call by kind: `read` (History rows), `count` (COUNT over History), `catalog` (the tag list).
A read's seconds are the time spent waiting for the historian's batches, not the caller's
work between them. A `HistorianLedger` keeps the same figures per hour in a small JSON file
shared by every process on the machine, for `ww status`. No Dagster import.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from ww_assets.historian import HistorianClient, TagInfo

KINDS = ("read", "count", "catalog")


@dataclass
class KindLoad:
    queries: int = 0
    rows: int = 0
    seconds: float = 0.0


class HistorianLoad:
    """Per-kind totals, safe to add to from several threads (a read ahead runs in its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kinds = {kind: KindLoad() for kind in KINDS}

    def add(self, kind: str, queries: int = 0, rows: int = 0, seconds: float = 0.0) -> None:
        with self._lock:
            load = self.kinds[kind]
            load.queries += queries
            load.rows += rows
            load.seconds += seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        """`{kind: {"queries", "rows", "seconds"}}`, a copy."""
        with self._lock:
            return {
                kind: {"queries": k.queries, "rows": k.rows, "seconds": round(k.seconds, 3)}
                for kind, k in self.kinds.items()
            }

    def metadata(self) -> dict[str, float]:
        """Flat figures for run metadata: `historian_<kind>_queries`, `_rows`, `_seconds`."""
        return {
            f"historian_{kind}_{figure}": value
            for kind, figures in self.snapshot().items()
            for figure, value in figures.items()
        }


LEDGER_HOURS = 48
"""Hours of figures a ledger keeps."""


class HistorianLedger:
    """Per-hour totals of every metered client on this machine, in a JSON file written under
    an exclusive file lock: `{"2026-12-01T13": {"read": [queries, rows, seconds], ...}}`."""

    def __init__(self, path: Path, clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def add(self, kind: str, queries: int, rows: int, seconds: float) -> None:
        hour = self.clock().strftime("%Y-%m-%dT%H")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            hours = self._load()
            figures = hours.setdefault(hour, {}).setdefault(kind, [0, 0, 0.0])
            figures[0] += queries
            figures[1] += rows
            figures[2] = round(figures[2] + seconds, 3)
            for old in sorted(hours)[:-LEDGER_HOURS]:
                del hours[old]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(hours, sort_keys=True))
            tmp.replace(self.path)

    def summary(self, hours: int = 24) -> dict[str, object]:
        """Totals per kind over the last `hours` hours (the current one included), and the
        queries per minute over that span."""
        since = (self.clock() - timedelta(hours=hours - 1)).strftime("%Y-%m-%dT%H")
        totals = {kind: {"queries": 0, "rows": 0, "seconds": 0.0} for kind in KINDS}
        for hour, kinds in self._load().items():
            if hour < since:
                continue
            for kind, (queries, rows, seconds) in kinds.items():
                if kind in totals:
                    totals[kind]["queries"] += queries
                    totals[kind]["rows"] += rows
                    totals[kind]["seconds"] = round(totals[kind]["seconds"] + seconds, 3)
        queries = sum(int(k["queries"]) for k in totals.values())
        return {"hours": hours, **totals, "queries_per_minute": round(queries / (hours * 60), 4)}

    def _load(self) -> dict[str, dict[str, list]]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}


class MeteredHistorian:
    """A historian client whose every query is counted into `load` (and `ledger`)."""

    def __init__(
        self,
        client: HistorianClient,
        load: HistorianLoad | None = None,
        ledger: HistorianLedger | None = None,
    ) -> None:
        self.client = client
        self.load = load if load is not None else HistorianLoad()
        self.ledger = ledger

    def _record(self, kind: str, queries: int, rows: int, seconds: float) -> None:
        self.load.add(kind, queries, rows, seconds)
        if self.ledger is not None:
            try:
                self.ledger.add(kind, queries, rows, seconds)
            except OSError:
                pass  # the figures are for people: a full disk must not fail a load

    def describe(self) -> str:
        return self.client.describe()

    def ping(self) -> None:
        self.client.ping()

    def list_tags(self) -> list[TagInfo]:
        started = time.monotonic()
        tags = self.client.list_tags()
        self._record("catalog", 1, len(tags), time.monotonic() - started)
        return tags

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        started = time.monotonic()
        counts = self.client.count_points(tags, start_utc, end_utc)
        # A COUNT's rows are the points it counted: what the historian retrieves for it.
        self._record("count", 1, sum(counts.values()), time.monotonic() - started)
        return counts

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        batches = iter(self.client.read_history(tags, start, end))
        rows, seconds = 0, 0.0
        try:
            while True:
                started = time.monotonic()
                batch = next(batches, None)
                seconds += time.monotonic() - started
                if batch is None:
                    return
                rows += batch.num_rows
                yield batch
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            self._record("read", 1, rows, seconds)
