"""Arrow columns as ClickHouse Native-protocol insert blocks, encoded column by column with
numpy and pyarrow compute: no Python object per value.

The bytes are those clickhouse-driver's own encoder writes for the same values (checked byte
for byte by the tests): the block info and the per-column serialization byte where the
protocol revision has them, `Nullable` as a null map then the values with nulls as the type's
zero, `String` as varint lengths and UTF-8 bytes, `LowCardinality` with a dictionary in order
of first appearance (behind a placeholder for NULL when nullable) and the narrowest index type
the driver picks. The types are the ones the server path inserts (History, the tag catalog):
signed and unsigned integers, Float32/64, String, DateTime64, each also Nullable, and
LowCardinality of String or Nullable(String); any other type is refused naming the column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import log

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The protocol revisions from which a block carries its `BlockInfo` and, per column, the
# custom-serialization byte (ClickHouse's DBMS_MIN_REVISION_WITH_BLOCK_INFO and
# DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION).
REVISION_WITH_BLOCK_INFO = 51903
REVISION_WITH_CUSTOM_SERIALIZATION = 54454

# is_overflows = 0 (field 1), bucket_num = -1 (field 2), end of fields.
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "Int8": np.dtype("<i1"), "Int16": np.dtype("<i2"), "Int32": np.dtype("<i4"),
    "Int64": np.dtype("<i8"), "UInt8": np.dtype("<u1"), "UInt16": np.dtype("<u2"),
    "UInt32": np.dtype("<u4"), "UInt64": np.dtype("<u8"), "Float32": np.dtype("<f4"),
    "Float64": np.dtype("<f8"),
}  # fmt: skip
_TIME_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_DATETIME64 = re.compile(r"^DateTime64\((\d+)(?:,\s*'[^']*')?\)$")

# LowCardinality: keys serialization version 1 (shared dictionaries with additional keys) as
# the column's state prefix; per block HasAdditionalKeys | NeedUpdateDictionary | index type.
_LC_PREFIX = (1).to_bytes(8, "little")
_LC_FLAGS = (1 << 9) | (1 << 10)
_LC_INDEX_TYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8"))


class NativeEncodingError(ValueError):
    """A column cannot be encoded as the type the server named for it."""


@dataclass(frozen=True)
class _Type:
    nullable: bool
    low_cardinality: bool
    base: str  # "String", a key of _FIXED, or "DateTime64"
    scale: int = 0


def _parse(spec: str, column: str) -> _Type:
    inner, low_cardinality = spec, False
    if inner.startswith("LowCardinality(") and inner.endswith(")"):
        inner, low_cardinality = inner[15:-1], True
    nullable = inner.startswith("Nullable(") and inner.endswith(")")
    if nullable:
        inner = inner[9:-1]
    if low_cardinality and inner != "String":
        inner = "unsupported"
    if inner in _FIXED or inner == "String":
        return _Type(nullable, low_cardinality, inner)
    if (match := _DATETIME64.match(inner)) is not None and int(match.group(1)) in _TIME_UNITS:
        return _Type(nullable, low_cardinality, "DateTime64", int(match.group(1)))
    raise NativeEncodingError(
        f"column {column}: no Native encoding here for the ClickHouse type {spec} "
        f"(ww_assets.native_encoding encodes integers, floats, String, DateTime64, "
        f"Nullable of those and LowCardinality(String))"
    )


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    return varint(len(data)) + data


def encode_block(table: pa.Table, columns_with_types: list[tuple[str, str]], revision: int) -> bytes:
    """One insert block of `table`'s rows: the columns named by `columns_with_types` (the
    server's sample block, in its order), each encoded as its ClickHouse type, framed for a
    server of protocol `revision` (block info, serialization byte)."""
    parts = [_BLOCK_INFO] if revision >= REVISION_WITH_BLOCK_INFO else []
    parts += [varint(len(columns_with_types)), varint(table.num_rows)]
    names = set(table.column_names)
    for name, spec in columns_with_types:
        if name not in names:
            raise NativeEncodingError(f"column {name} ({spec}) is not among the inserted columns")
        parts += [_text(name), _text(spec)]
        if revision >= REVISION_WITH_CUSTOM_SERIALIZATION:
            parts.append(b"\x00")  # no custom (sparse) serialization
        parts += encode_column(table.column(name), spec, name)
    return b"".join(parts)


def encode_column(column: pa.ChunkedArray | pa.Array, spec: str, name: str) -> list[bytes]:
    """`column`'s values as ClickHouse type `spec` writes them in a Native block (with the
    type's state prefix), as a list of byte strings to be joined."""
    kind = _parse(spec, name)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count and not kind.nullable:
        raise NativeEncodingError(f"column {name} ({spec}) has {array.null_count} NULL value(s)")
    if kind.low_cardinality:
        return [_LC_PREFIX] + _low_cardinality(_as_strings(array, name, spec), kind.nullable)
    nulls = [_null_map(array)] if kind.nullable else []
    if kind.base == "String":
        return nulls + [_strings(_as_strings(array, name, spec))]
    return nulls + [_fixed(array, kind, name, spec)]


def _null_map(array: pa.Array) -> bytes:
    if not array.null_count:
        return bytes(len(array))
    return pc.is_null(array).to_numpy(zero_copy_only=False).view(np.uint8).tobytes()


def _fixed(array: pa.Array, kind: _Type, name: str, spec: str) -> bytes:
    try:
        if kind.base == "DateTime64":
            if pa.types.is_timestamp(array.type):
                array = array.cast(pa.timestamp(_TIME_UNITS[kind.scale])).cast(pa.int64())
            dtype = np.dtype("<i8")
            array = array.cast(pa.int64())
        else:
            dtype = _FIXED[kind.base]
            array = array.cast(pa.from_numpy_dtype(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise NativeEncodingError(f"column {name} ({spec}) from Arrow {array.type}: {error}") from error
    if array.null_count:
        array = pc.fill_null(array, 0)
    return array.to_numpy(zero_copy_only=False).astype(dtype, copy=False).tobytes()


def _as_strings(array: pa.Array, name: str, spec: str) -> pa.Array:
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array
    if pa.types.is_dictionary(array.type) and pa.types.is_string(array.type.value_type):
        return array.cast(pa.string())
    raise NativeEncodingError(f"column {name} ({spec}) from Arrow {array.type}: strings expected")


def _strings(array: pa.Array) -> bytes:
    """Each value as its UTF-8 length (varint) then its bytes; NULL as the empty string."""
    if array.null_count == len(array):
        return bytes(len(array))  # every value the empty string: one zero length each
    if array.null_count:
        array = pc.fill_null(array, "")
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, offset_type)[array.offset:array.offset + len(array) + 1]
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0]:offsets[-1]] if data_buffer else None
    # Bytes of each length's varint: one per 7 bits.
    sizes = np.ones(len(lengths), np.int64)
    for bits in (7, 14, 21, 28, 35, 42, 49, 56):
        sizes += lengths >= (1 << bits)
    starts = offsets[:-1] - offsets[0] + np.cumsum(sizes) - sizes
    out = np.empty(int(offsets[-1] - offsets[0] + sizes.sum()), np.uint8)
    is_data = np.ones(len(out), bool)
    for k in range(int(sizes.max()) if len(sizes) else 0):
        sel = sizes > k
        positions = starts[sel] + k
        more = np.where(sizes[sel] > k + 1, 0x80, 0)
        out[positions] = ((lengths[sel] >> (7 * k)) & 0x7F) | more
        is_data[positions] = False
    if data is not None and len(data):
        out[is_data] = data
    return out.tobytes()


def _low_cardinality(array: pa.Array, nullable: bool) -> list[bytes]:
    encoded = pc.dictionary_encode(array)
    dictionary = encoded.dictionary
    indices = encoded.indices
    if nullable:
        # Key 0 is NULL's placeholder (the empty string); values follow from key 1.
        dictionary = pa.concat_arrays([pa.array([""], dictionary.type), dictionary])
        indices = pc.add(pc.fill_null(indices, -1), 1)
    if not len(dictionary):
        return []  # no rows: the driver writes nothing for the column
    index_type = int(log(len(dictionary), 2) / 8)  # as the driver computes it
    keys = indices.to_numpy(zero_copy_only=False).astype(_LC_INDEX_TYPES[index_type])
    return [
        (_LC_FLAGS | index_type).to_bytes(8, "little"),
        len(dictionary).to_bytes(8, "little"),
        _strings(dictionary),
        len(array).to_bytes(8, "little"),
        keys.tobytes(),
    ]
