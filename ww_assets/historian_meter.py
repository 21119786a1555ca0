"""The load this tool puts on the historian: queries, rows returned and seconds per kind.

`MeteredHistorian` wraps any `HistorianClient` (as `GuardedHistorian` does) and counts every
call by kind: `read` (History rows), `count` (COUNT over History), `catalog` (the tag list).
A read's seconds are the time spent waiting for the historian's batches, not the caller's
work between them. No Dagster import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

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


class MeteredHistorian:
    """A historian client whose every query is counted into `load`."""

    def __init__(self, client: HistorianClient, load: HistorianLoad | None = None) -> None:
        self.client = client
        self.load = load if load is not None else HistorianLoad()

    def describe(self) -> str:
        return self.client.describe()

    def ping(self) -> None:
        self.client.ping()

    def list_tags(self) -> list[TagInfo]:
        started = time.monotonic()
        tags = self.client.list_tags()
        self.load.add("catalog", 1, len(tags), time.monotonic() - started)
        return tags

    def count_points(
        self, tags: Sequence[str], start_utc: datetime, end_utc: datetime
    ) -> dict[str, int]:
        started = time.monotonic()
        counts = self.client.count_points(tags, start_utc, end_utc)
        # A COUNT's rows are the points it counted: what the historian retrieves for it.
        self.load.add("count", 1, sum(counts.values()), time.monotonic() - started)
        return counts

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        batches = iter(self.client.read_history(tags, start, end))
        self.load.add("read", queries=1)
        try:
            while True:
                started = time.monotonic()
                batch = next(batches, None)
                waited = time.monotonic() - started
                if batch is None:
                    self.load.add("read", seconds=waited)
                    return
                self.load.add("read", rows=batch.num_rows, seconds=waited)
                yield batch
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
