"""How the history asset loads its partitions: a partition's slice, its copy from one
read-ahead historian read, and the figures its materialization shows."""

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import NamedTuple

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ww_assets.history_query import day_bounds
from ww_assets.history_store import SliceStats
from ww_assets.read_ahead import ReadsAhead
from ww_assets.wonderware.partitions import split_key
from ww_assets.wonderware.resources import WarehouseResource


def partition_metadata(stats: SliceStats) -> dict[str, object]:
    """What one partition's materialization shows: its own rows, tags, time span and speed."""
    return {
        "rows": stats.rows,
        "tags": len(stats.tags_with_rows),
        "rows_rejected": stats.rejected,
        "min_datetime": stats.min_time.isoformat() if stats.min_time else "",
        "max_datetime": stats.max_time.isoformat() if stats.max_time else "",
        "duration_s": round(stats.seconds, 3),
        "rows_per_s": round(stats.rows / stats.seconds, 1) if stats.seconds > 0 else 0.0,
    }


class Slice(NamedTuple):
    """A history partition: its chunk's tags over one UTC day."""

    key: str
    chunk: str
    day: date
    tags: list[str]
    start: datetime
    end: datetime

    @classmethod
    def of(cls, key: str, tags_by_chunk: dict[str, list[str]]) -> "Slice":
        chunk, day = split_key(key)
        if chunk not in tags_by_chunk:
            raise dg.Failure(
                f"tag chunk {chunk} is not in WonderwareTags: materialize wonderware/tags first",
                allow_retries=False,
            )
        return cls(key, chunk, day, tags_by_chunk[chunk], *day_bounds(day))


def copy_read(
    reads: ReadsAhead[pa.RecordBatch],
    index: int,
    warehouse: WarehouseResource,
    part: Slice,
    read: dict[str, int],
) -> SliceStats:
    """Replace `part`'s slice with read `index` of `reads` (a fresh read on a retry); `read`
    gets the rows per tag the historian returned."""
    read.clear()
    read.update(dict.fromkeys(part.tags, 0))
    with reads.read(index) as batches:
        return warehouse.replace_slice(part.tags, part.start, part.end, _tally(batches, read))


def _tally(batches: Iterable[pa.RecordBatch], read: dict[str, int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for item in pc.value_counts(batch.column("TagName")).to_pylist():
            read[item["values"]] = read.get(item["values"], 0) + item["counts"]
        yield batch
