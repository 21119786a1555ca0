"""clickhouse-driver's native-protocol encoding of insert blocks, without a server.

`Client.execute` encodes an insert's columns with these classes once the server has named the
columns and their types; here the types come from the table's definition and the bytes go to a
socket stand-in. The bench times it; a test compares the bytes of two ways of building columns.
"""

from __future__ import annotations

from typing import Any

from clickhouse_driver import defines
from clickhouse_driver.block import ColumnOrientedBlock
from clickhouse_driver.bufferedwriter import BufferedSocketWriter
from clickhouse_driver.client import Client
from clickhouse_driver.connection import ServerInfo
from clickhouse_driver.streams.native import BlockOutputStream

from ww_assets.history_store import LOAD_ID_COLUMN
from ww_assets.schema import HISTORY_COLUMNS


class NativeBlocks:
    """Encodes History insert blocks (the table's columns, then `LoadId`) as the driver would
    send them; `size` counts the bytes, `sent` holds them when `keep` is set."""

    def __init__(self, keep: bool = False) -> None:
        self.keep, self.sent, self.size = keep, bytearray(), 0
        context = Client("localhost", settings={"server_side_params": True}).connection.context
        context.server_info = ServerInfo(
            "ClickHouse", 24, 8, 0, defines.CLIENT_REVISION, "UTC", "", defines.CLIENT_REVISION
        )
        self._out = BlockOutputStream(BufferedSocketWriter(self, defines.BUFFER_SIZE), context)
        self.types = [(c.name, c.clickhouse_type) for c in HISTORY_COLUMNS]
        self.types.append((LOAD_ID_COLUMN, "UInt64"))

    def sendall(self, data: bytes) -> None:  # the socket's part
        self.size += len(data)
        if self.keep:
            self.sent += data

    def write(self, columns: list[list[Any]]) -> None:
        self._out.write(ColumnOrientedBlock(self.types, columns, types_check=False))
