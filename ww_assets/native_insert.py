"""An Arrow table inserted into a ClickHouse server over clickhouse-driver's own connection,
its blocks encoded by `native_encoding` instead of the driver's per-value Python encoder.

The flow is the driver's `Client.process_insert_query` and `send_data` (query, the server's
sample block naming the columns and their types, data blocks, an empty block, end of query),
on the driver's socket, settings, compression and protocol revision; only the blocks' bytes
are ours. This module is the one place that uses the driver's internals
(pyproject.toml pins its minor version for them).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ww_assets.native_encoding import encode_block


def send_insert(client: Any, query: str, table: pa.Table, settings: dict[str, Any]) -> int:
    """Runs `query` (`INSERT INTO t (columns) VALUES`) on clickhouse-driver `client` with
    `table`'s rows as its data, in blocks of the client's `insert_block_size` rows; returns the
    rows sent. A table without rows sends no data block, as the driver's insert does."""
    from clickhouse_driver import defines
    from clickhouse_driver.block import ColumnOrientedBlock
    from clickhouse_driver.protocol import ClientPacketTypes
    from clickhouse_driver.varint import write_varint
    from clickhouse_driver.writer import write_binary_str

    with client.disconnect_on_error(query, settings):
        connection = client.connection
        connection.send_query(query)
        connection.send_external_tables(None)
        sample = client.receive_sample_block()
        if not sample:
            return 0
        revision = connection.server_info.used_revision
        step = connection.context.client_settings["insert_block_size"]
        for start in range(0, table.num_rows, step):
            body = encode_block(table.slice(start, step), sample.columns_with_types, revision)
            # `Connection.send_data` with the block's bytes written by us: the packet type and
            # the (empty) table name raw, the block through the block stream, which frames and
            # compresses it when the connection compresses.
            write_varint(ClientPacketTypes.DATA, connection.fout)
            if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
                write_binary_str("", connection.fout)
            connection.block_out.fout.write(body)
            connection.block_out.finalize()
            client.receive_profile_events()
        connection.send_data(ColumnOrientedBlock())  # the empty block: end of the data
        client.receive_profile_events()
        client.receive_end_of_insert_query()
    return table.num_rows
