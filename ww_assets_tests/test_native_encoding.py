"""`native_encoding` writes the bytes clickhouse-driver's own encoder writes for the same
values, byte for byte: random tables with NULLs, empty strings, non-ASCII and long strings
(multi-byte varint lengths), LowCardinality columns past each index width; History rows as
the historian client makes them; slices of tables (as `send_insert` cuts blocks); both sides
of each protocol revision that changes a block. No server: the driver's encoder writes into a
socket stand-in (`bench.native_blocks`). A real server's decoding of the bytes is tested in
test_old_clickhouse (ClickHouse 18.16 over TCP) and test_server_statements (chDB reading
them as a Native block)."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_driver import defines

from bench.native_blocks import HISTORY_TYPES, NativeBlocks
from ww_assets.native_encoding import NativeEncodingError, encode_block

REVISIONS = (
    0,  # the Native file format: no block info
    defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION - 1,  # block info, no serialization byte
    defines.CLIENT_REVISION,  # both
)

WORDS = ["", "a", "é", "日本語", "Tank 4 Level", "\U0001f6b0", "x" * 127, "y" * 128, "ü" * 200,
         "z" * 20_000]  # fmt: skip


def random_columns(rng: random.Random, rows: int, distinct: int) -> dict[str, tuple[str, pa.DataType, list[Any]]]:
    """Columns of each type the server path inserts and 18.16 has too: name → (ClickHouse
    type, Arrow type, values); strings drawn from `WORDS` and from `distinct` others."""

    def text() -> str:
        r = rng.random()
        return rng.choice(WORDS) if r < 0.4 else f"v{rng.randrange(distinct)}"

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.25 else value

    return {
        "k": ("UInt64", pa.uint64(), list(range(rows))),
        "big": ("UInt64", pa.uint64(), [rng.randrange(2**64) for _ in range(rows)]),
        "i": ("Nullable(Int32)", pa.int32(), [maybe(rng.randrange(-2**31, 2**31)) for _ in range(rows)]),
        "n": ("Int32", pa.int32(), [rng.randrange(-2**31, 2**31) for _ in range(rows)]),
        "q": ("Nullable(UInt8)", pa.uint8(), [maybe(rng.randrange(256)) for _ in range(rows)]),
        "u": ("UInt8", pa.uint8(), [rng.randrange(256) for _ in range(rows)]),
        "f": ("Nullable(Float64)", pa.float64(), [maybe(rng.uniform(-1e9, 1e9)) for _ in range(rows)]),
        "g": ("Float64", pa.float64(), [rng.uniform(-1, 1) for _ in range(rows)]),
        "s": ("String", pa.string(), [text() for _ in range(rows)]),
        "ns": ("Nullable(String)", pa.string(), [maybe(text()) for _ in range(rows)]),
        "lc": ("LowCardinality(String)", pa.string(), [text() for _ in range(rows)]),
        "lcn": ("LowCardinality(Nullable(String))", pa.string(), [maybe(text()) for _ in range(rows)]),
    }  # fmt: skip


def arrow_table(columns: dict[str, tuple[str, pa.DataType, list[Any]]]) -> pa.Table:
    return pa.table({name: pa.array(values, arrow) for name, (_, arrow, values) in columns.items()})


def driver_bytes(types: list[tuple[str, str]], columns: list[list[Any]], revision: int) -> bytes:
    """The driver's block of `columns` (copies: it writes the NULLs' replacements into them)."""
    blocks = NativeBlocks(types, revision, keep=True)
    blocks.write([list(column) for column in columns])
    return bytes(blocks.sent)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("revision", REVISIONS)
def test_random_tables_encode_to_the_driver_s_bytes(seed: int, revision: int) -> None:
    rng = random.Random(seed)
    columns = random_columns(rng, rows=rng.randrange(500, 3000), distinct=rng.choice([3, 300]))
    types = [(name, spec) for name, (spec, _, _) in columns.items()]
    expected = driver_bytes(types, [values for _, _, values in columns.values()], revision)
    assert len(expected) > 10_000
    assert encode_block(arrow_table(columns), types, revision) == expected


@pytest.mark.parametrize("distinct", [254, 255, 256, 65_535, 65_536])
def test_low_cardinality_index_widths_are_the_driver_s(distinct: int) -> None:
    """The driver sizes the index from the dictionary's length, NULL's placeholder included:
    UInt8 up to 255 entries, UInt16 from 256, UInt32 from 65,536."""
    values = [f"tag {n}" for n in range(distinct)] * 2
    nullable = [None, *values[1:]]
    types = [("lc", "LowCardinality(String)"), ("lcn", "LowCardinality(Nullable(String))")]
    table = pa.table({"lc": pa.array(values), "lcn": pa.array(nullable)})
    assert encode_block(table, types, defines.CLIENT_REVISION) == driver_bytes(
        types, [values, nullable], defines.CLIENT_REVISION)  # fmt: skip


def test_history_rows_from_the_historian_client_encode_to_the_driver_s_bytes() -> None:
    """History's 34 insert columns as `rows_to_batch` and `with_load_id` make them; the driver
    given the `datetime` objects the historian returned (and NULL where it had none)."""
    from ww_assets.historian import rows_to_batch
    from ww_assets.history_store import with_load_id
    from ww_assets.schema import COLUMN_NAMES

    rng = random.Random(7)
    where = {name: i for i, name in enumerate(COLUMN_NAMES)}
    rows = []
    for n in range(2000):
        row: list[Any] = [None] * len(COLUMN_NAMES)
        row[where["DateTime"]] = datetime(2025, 6, 1, rng.randrange(24), rng.randrange(60),
                                          rng.randrange(60), rng.randrange(1000) * 1000)  # fmt: skip
        row[where["TagName"]] = f"Tank {n % 40}.Level"
        row[where["Value"]] = rng.choice([None, rng.uniform(-50, 50)])
        row[where["VValue"]] = rng.choice([None, "", "Open", "Geschlossen", "x" * 300])
        row[where["Quality"]] = rng.choice([None, 0, 192])
        row[where["OpcQuality"]] = rng.choice([None, 192, -1])
        row[where["wwRetrievalMode"]] = "Full"
        row[where["wwTimeZone"]] = rng.choice([None, "UTC"])
        row[where["StartDateTime"]] = rng.choice([None, datetime(2026, 3, 29, 1, 59, 59, 999000)])
        rows.append(tuple(row))
    table = with_load_id(pa.Table.from_batches([rows_to_batch(rows)]), 1_764_000_000_000_000_000)
    assert [(name, str(type_)) for name, type_ in zip(table.column_names, table.schema.types)][:2] == [
        ("DateTime", "timestamp[ms, tz=UTC]"), ("TagName", "string")]  # fmt: skip
    expected = driver_bytes(HISTORY_TYPES, [column.to_pylist() for column in table.columns],
                            defines.CLIENT_REVISION)  # fmt: skip
    assert encode_block(table, HISTORY_TYPES, defines.CLIENT_REVISION) == expected


def test_slices_of_chunked_columns_encode_to_the_driver_s_bytes() -> None:
    """`send_insert` cuts a table into blocks with `slice`: columns of several chunks, read
    from an offset (the offsets and validity bitmaps of the Arrow arrays start mid-buffer)."""
    columns = random_columns(random.Random(11), rows=3000, distinct=300)
    table = arrow_table(columns)
    chunked = pa.concat_tables([table.slice(0, 1000), table.slice(1000, 1001), table.slice(2001)])
    assert chunked.column("ns").num_chunks == 3
    types = [(name, spec) for name, (spec, _, _) in columns.items()]
    for start, length in ((0, 700), (700, 1500), (2200, 800)):
        part = chunked.slice(start, length)
        expected = driver_bytes(types, [values[start:start + length] for _, _, values in columns.values()],
                                defines.CLIENT_REVISION)  # fmt: skip
        assert encode_block(part, types, defines.CLIENT_REVISION) == expected, (start, length)


def test_columns_are_encoded_in_the_server_s_order_by_name() -> None:
    """The sample block's order is the one written, whatever the table's column order."""
    table = pa.table({"b": pa.array(["x", None]), "a": pa.array([1, 2], pa.int32())})
    types = [("a", "Int32"), ("b", "Nullable(String)")]
    assert encode_block(table, types, defines.CLIENT_REVISION) == driver_bytes(
        types, [[1, 2], ["x", None]], defines.CLIENT_REVISION)  # fmt: skip


@pytest.mark.parametrize(("table", "types", "message"), [
    (pa.table({"d": pa.array([1.5])}), [("d", "Decimal(9, 2)")],
     "column d: no Native encoding here for the ClickHouse type Decimal(9, 2)"),
    (pa.table({"a": pa.array([1, None], pa.int32())}), [("a", "Int32")],
     "column a (Int32) has 1 NULL value(s)"),
    (pa.table({"s": pa.array([1, 2])}), [("s", "String")],
     "column s (String) from Arrow int64: strings expected"),
    (pa.table({"n": pa.array([300], pa.int64())}), [("n", "UInt8")], "column n (UInt8) from Arrow int64"),
    (pa.table({"a": pa.array([1])}), [("b", "Int64")], "column b (Int64) is not among the inserted columns"),
])  # fmt: skip
def test_what_cannot_be_encoded_is_refused_naming_the_column(
    table: pa.Table, types: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(NativeEncodingError) as refused:
        encode_block(table, types, defines.CLIENT_REVISION)
    assert message in str(refused.value)


@pytest.mark.parametrize("nulls", ["none", "all"])
def test_columns_without_nulls_and_of_nulls_only_encode_to_the_driver_s_bytes(nulls: str) -> None:
    """History's usual extremes: a Nullable column with no NULL (Value of analog tags) or only
    NULLs (VValue of analog tags, most LowCardinality parameters)."""
    columns = random_columns(random.Random(13), rows=600, distinct=20)
    for name, (spec, arrow, values) in list(columns.items()):
        if spec.startswith(("Nullable", "LowCardinality(Nullable")):
            filled = [v for v in values if v is not None][0]
            columns[name] = (spec, arrow, [None if nulls == "all" else (filled if v is None else v)
                                           for v in values])  # fmt: skip
    types = [(name, spec) for name, (spec, _, _) in columns.items()]
    table = arrow_table(columns)
    assert table.column("ns").null_count == (600 if nulls == "all" else 0)
    assert encode_block(table, types, defines.CLIENT_REVISION) == driver_bytes(
        types, [values for _, _, values in columns.values()], defines.CLIENT_REVISION)  # fmt: skip
