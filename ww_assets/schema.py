"""The History row: its 33 columns, as the historian returns them and as ClickHouse stores them.

Names follow the replaced system's `WonderwareHistory` table; types follow the AVEVA
History table (65379), narrowed where the data allows (DateTime64(3): delta-storage
timestamps are accurate to 1 ms, 67229).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_MS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    """Name in ClickHouse and in the Arrow batches (the replaced system's name)."""
    source: str
    """Name in the historian's History table."""
    clickhouse_type: str
    arrow_type: pa.DataType
    codec: str = ""


def _lc(name: str) -> Column:
    """A query parameter echoed back in every row: one value per query, so LowCardinality."""
    return Column(name, name, "LowCardinality(Nullable(String))", pa.string())


HISTORY_COLUMNS: tuple[Column, ...] = (
    Column("DateTime", "DateTime", "DateTime64(3, 'UTC')", UTC_MS, "CODEC(DoubleDelta, ZSTD(1))"),
    Column("TagName", "TagName", "LowCardinality(String)", pa.string()),
    Column("Value", "Value", "Nullable(Float64)", pa.float64(), "CODEC(Gorilla, ZSTD(1))"),
    Column("VValue", "vValue", "Nullable(String)", pa.string(), "CODEC(ZSTD(1))"),
    Column("Quality", "Quality", "Nullable(UInt8)", pa.uint8()),
    Column("QualityDetail", "QualityDetail", "Nullable(Int32)", pa.int32()),
    Column("OpcQuality", "OPCQuality", "Nullable(Int32)", pa.int32()),
    Column("wwTagKey", "wwTagKey", "Nullable(Int32)", pa.int32()),
    Column("wwRowCount", "wwRowCount", "Nullable(Int32)", pa.int32()),
    Column("wwResolution", "wwResolution", "Nullable(Int32)", pa.int32()),
    _lc("wwEdgeDetection"),
    Column("wwRetrievalMode", "wwRetrievalMode", "LowCardinality(String)", pa.string()),
    Column("wwTimeDeadband", "wwTimeDeadband", "Nullable(Int32)", pa.int32()),
    Column("wwValueDeadband", "wwValueDeadband", "Nullable(Float64)", pa.float64()),
    _lc("wwTimeZone"),
    _lc("wwVersion"),
    Column("wwCycleCount", "wwCycleCount", "Nullable(Int32)", pa.int32()),
    _lc("wwTimeStampRule"),
    _lc("wwInterpolationType"),
    _lc("wwQualityRule"),
    _lc("wwStateCalc"),
    Column("StateTime", "StateTime", "Nullable(Float64)", pa.float64()),
    Column("PercentGood", "PercentGood", "Nullable(Float64)", pa.float64()),
    _lc("wwParameters"),
    Column("StartDateTime", "StartDateTime", "Nullable(DateTime64(3, 'UTC'))", UTC_MS),
    _lc("SourceTag"),
    _lc("SourceServer"),
    _lc("wwFilter"),
    _lc("wwValueSelector"),
    Column("wwMaxStates", "wwMaxStates", "Nullable(Int32)", pa.int32()),
    _lc("wwOption"),
    _lc("wwExpression"),
    _lc("wwUnit"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in HISTORY_COLUMNS)
HISTORY_ARROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow_type) for c in HISTORY_COLUMNS])

# Set by the warehouse on every row it inserts: which load wrote the row. A slice replacement
# inserts its rows first and then deletes the slice's rows of every other load, so a reader
# never sees a hole and the last replacement of a slice wins.
LOAD_ID_COLUMN = "LoadId"

assert len(HISTORY_COLUMNS) == 33
