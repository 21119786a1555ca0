"""The 1-minute rollup of a UTC day into `WonderwareHistoryAggregated` (its table is created
with the others, `history_store.create_schema`). No Dagster import.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from ww_assets.history_query import day_bounds, naive_utc
from ww_assets.history_store import (
    DELETED_COLUMN,
    FINAL_SETTINGS,
    HISTORY_TABLE,
    ROLLUP_COLUMNS,
    ROLLUP_STORE,
    ROLLUP_TABLE,
    ensure_schema,
    new_load_id,
)
from ww_assets.warehouse import Warehouse, WarehouseConnection

@dataclass
class RollupStats:
    rows: int = 0
    points: int = 0
    tags: int = 0
    seconds: float = 0.0


class RollupLoad:
    """The rollup of one UTC day on an open session, statement by statement, as `SliceLoad`
    loads raw points (`replace_rollup_day` runs it; tests interleave two)."""

    def __init__(self, conn: WarehouseConnection, database: str, day: date) -> None:
        self.conn, self.database, self.day = conn, database, day
        self.start, self.end = day_bounds(day)
        self.load_id = 0

    def begin(self) -> int:
        self.load_id = new_load_id(self.conn, self.database, ROLLUP_STORE, 0, self.start, self.end)
        return self.load_id

    def insert(self) -> None:
        """Per tag and minute of the day's raw points as readers see them: `first_value` is
        the first non-NULL value, avg/min/max are over non-NULL values, `count` counts every
        stored point (gap markers and strings too), the quality columns aggregate `Quality`."""
        self.conn.command(
            f"INSERT INTO {self.database}.{ROLLUP_STORE} ({', '.join(ROLLUP_COLUMNS)}) "
            "SELECT TagName, toStartOfMinute(DateTime) AS minute_timestamp, "
            "argMinIf(Value, DateTime, Value IS NOT NULL) AS first_value, "
            "avg(Value) AS avg_value, min(Value) AS min_value, max(Value) AS max_value, "
            "count() AS count, avg(Quality) AS avg_quality, min(Quality) AS min_quality, "
            "{load_id:UInt64} AS LoadId "
            f"FROM {self.database}.{HISTORY_TABLE} "
            "WHERE DateTime >= {start:DateTime64(3, 'UTC')} AND DateTime < {end:DateTime64(3, 'UTC')} "
            "GROUP BY TagName, minute_timestamp",
            {"start": naive_utc(self.start), "end": naive_utc(self.end), "load_id": self.load_id},
        )

    def finish(self) -> None:
        """Mark deleted every minute of the day whose newest row is older than this load."""
        self.conn.command(
            f"INSERT INTO {self.database}.{ROLLUP_STORE} (TagName, minute_timestamp, LoadId, "
            f"{DELETED_COLUMN}) SELECT TagName, minute_timestamp, {{load_id:UInt64}}, 1 "
            f"FROM {self.database}.{ROLLUP_STORE} FINAL WHERE {_MINUTES} "
            f"AND LoadId < {{load_id:UInt64}} SETTINGS {FINAL_SETTINGS}",
            {**self._minutes(), "load_id": self.load_id},
        )

    def _minutes(self) -> dict[str, str]:
        # The rollup's minutes are DateTime (seconds): their bounds go without milliseconds.
        return {name: naive_utc(bound).strftime("%Y-%m-%d %H:%M:%S")
                for name, bound in (("start", self.start), ("end", self.end))}  # fmt: skip


_MINUTES = "minute_timestamp >= {start:DateTime('UTC')} AND minute_timestamp < {end:DateTime('UTC')}"


def replace_rollup_day(warehouse: Warehouse, day: date) -> RollupStats:
    """Make the rollup of `day` exactly the aggregate of its raw points (`RollupLoad`)."""
    started = time.monotonic()
    with warehouse.connect() as conn:
        ensure_schema(conn, warehouse.database)
        # The load id is taken once the session is ours, as `replace_slice` does: a rollup
        # that waited for the lock replaces the one it waited for.
        load = RollupLoad(conn, warehouse.database, day)
        load.begin()
        load.insert()
        load.finish()
        summary = conn.query(
            "SELECT TagName, count() AS minutes, sum(count) AS points "
            f"FROM {warehouse.database}.{ROLLUP_TABLE} WHERE {_MINUTES} GROUP BY TagName",
            load._minutes(),
        ).to_pylist()
    return RollupStats(
        rows=sum(int(r["minutes"]) for r in summary),
        points=sum(int(r["points"]) for r in summary),
        tags=len(summary),
        seconds=time.monotonic() - started,
    )
