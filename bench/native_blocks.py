"""clickhouse-driver's own native-protocol encoding of insert blocks, without a server: the
reference `ww_assets.native_encoding` is checked against byte for byte, and the bench's
figure of what the driver's encoding would cost.

`Client.execute` encodes an insert's columns with these classes once the server has named the
columns and their types; here the types are given and the bytes go to a socket stand-in.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from clickhouse_driver import defines
from clickhouse_driver.block import ColumnOrientedBlock
from clickhouse_driver.bufferedwriter import BufferedSocketWriter
from clickhouse_driver.client import Client
from clickhouse_driver.connection import ServerInfo
from clickhouse_driver.streams.native import BlockOutputStream

from ww_assets.history_store import LOAD_ID_COLUMN
from ww_assets.schema import HISTORY_COLUMNS

HISTORY_TYPES = [(c.name, c.clickhouse_type) for c in HISTORY_COLUMNS] + [(LOAD_ID_COLUMN, "UInt64")]
"""History's insert columns and types, as a server's sample block names them."""


class NativeBlocks:
    """Encodes insert blocks of columns `types` (name, ClickHouse type) as the driver sends
    them to a server of protocol `revision`; `size` counts the bytes, `sent` holds them when
    `keep` is set."""

    def __init__(self, types: list[tuple[str, str]] = HISTORY_TYPES,
                 revision: int = defines.CLIENT_REVISION, keep: bool = False) -> None:  # fmt: skip
        self.keep, self.sent, self.size = keep, bytearray(), 0
        context = Client("localhost", settings={"server_side_params": True}).connection.context
        context.server_info = ServerInfo("ClickHouse", 24, 8, 0, revision, "UTC", "", revision)
        self._out = BlockOutputStream(BufferedSocketWriter(self, defines.BUFFER_SIZE), context)
        self.types = types

    def sendall(self, data: bytes) -> None:  # the socket's part
        self.size += len(data)
        if self.keep:
            self.sent += data

    def write(self, columns: list[list[Any]]) -> None:
        self._out.write(ColumnOrientedBlock(self.types, columns, types_check=False))


def driver_columns(data: pa.Table) -> list[list[Any]]:
    """`data` as the driver's columnar insert takes it at its cheapest: a Python list per
    column, timestamps as integer milliseconds (which it writes to a `DateTime64(3)` as they
    are)."""
    return [
        (column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
         if pa.types.is_timestamp(column.type) else column).to_pylist()
        for column in data.columns
    ]  # fmt: skip
