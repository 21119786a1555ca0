"""The historian emulator behind a real SQL Server wire (TDS), for `ww simulate serve` and tests.

It imitates what a client of an AVEVA Historian's SQL Server sees: TLS-tunnelled LOGIN7 with
an SQL login (a wrong one is answered as SQL Server answers it, error 18456), SQL batches
answered with TDS result sets, `History` queries answered by `HistorianEmulator` with the
historian's semantics (`tsql` says which T-SQL), `DateTime`/`StartDateTime` as `datetime2(7)`,
and catalog `SELECT`s run on the emulator's AVEVA-shaped SQLite tables (a missing column or
table fails with 207 / 208 naming it). A History answer is streamed: rows are encoded and
sent packet by packet as the emulator produces them, so memory does not grow with the answer.

Built on pysqlbridge (prelogin, TLS, LOGIN7, SQL logins, packet framing, tokens); this module
adds the `datetime2` type and the streaming query step. It refuses RPC calls (sp_executesql),
writes, and more than one SELECT per batch. Down-level clients (TDS < 7.3) get `datetime2` as
nvarchar text, as SQL Server sends it to them. Where it differs from SQL Server: catalog
queries compare strings as SQLite does (case-sensitive, where SQL Server's default collation
is not), and a cancel (ATTENTION) is acknowledged once the answer in progress has been sent.

Fault injection (`Faults`) is for tests only: the CLI never sets it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import operator
import socket
import socketserver
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from pysqlbridge.certificate import Certificate, self_signed
from pysqlbridge.server import BridgeServer
from pysqlbridge.tds.batch import parse_sql_batch
from pysqlbridge.tds.connection import Connection, ConnectionState
from pysqlbridge.tds.packet import (
    DEFAULT_PACKET_SIZE,
    HEADER_SIZE,
    TDS_73A,
    PacketStatus,
    PacketType,
)
from pysqlbridge.tds.result import (
    SELECT_COMMAND,
    Column,
    ColumnType,
    Float,
    Integer,
    NVarChar,
    Query,
    QueryError,
    QueryResult,
    VarBinary,
    col_metadata,
)
from pysqlbridge.tds.token import DoneStatus, done
from pysqlbridge.tds.token import error as error_token

from ww_assets.emulator.history import HistorianEmulator
from ww_assets.emulator.tsql import (
    INCORRECT_SYNTAX,
    INVALID_COLUMN,
    INVALID_OBJECT,
    CatalogSelect,
    HistoryCount,
    HistorySelect,
    parse_batch,
)
from ww_assets.history_query import HistoryQuery
from ww_assets.schema import HISTORY_COLUMNS

log = logging.getLogger(__name__)

DATABASE = "Runtime"
RECV_SIZE = 65536
# Encoded rows are handed to the socket in blocks of about this size (whole packets).
SEND_BLOCK_BYTES = 256 * 1024
DEFAULT_BATCH_ROWS = 10_000

_DATETIME2N = 0x2A
_SCALE = 7
_DATETIME2_VALUE = struct.Struct("<BQ")  # length 8, then 5 bytes of time and 3 of date
_FLOAT8 = struct.Struct("<Bd")
_USHORT = struct.Struct("<H")
_HEADER = struct.Struct(">BBHHBB")
_ROW = b"\xd1"


@dataclass(frozen=True)
class DateTime2(ColumnType):
    """DATETIME2N with scale 7 (100 ns): a length byte (8, or 0 for NULL), the time as a
    5-byte little-endian count of 100 ns since midnight, then the date as a 3-byte count of
    days since 0001-01-01. Python datetimes carry microseconds, so the last digit is 0."""

    def type_info(self) -> bytes:
        return bytes([_DATETIME2N, _SCALE])

    def encode(self, value: object) -> bytes:
        return encode_datetime2(value)  # type: ignore[arg-type]


def encode_datetime2(value: datetime | None) -> bytes:
    if value is None:
        return b"\x00"
    ticks = (
        ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    ) * 10
    return _DATETIME2_VALUE.pack(8, ticks | ((value.toordinal() - 1) << 40))


class _DownLevelDateTime2(NVarChar):
    """datetime2 for a client below TDS 7.3: the text SQL Server sends instead."""

    def encode(self, value: object) -> bytes:
        if not isinstance(value, datetime):
            return super().encode(value)
        return super().encode(value.isoformat(sep=" ", timespec="microseconds") + "0")


def _history_type(arrow_type: pa.DataType) -> ColumnType:
    if pa.types.is_timestamp(arrow_type):
        return DateTime2()
    if pa.types.is_floating(arrow_type):
        return Float(8)
    if pa.types.is_uint8(arrow_type):
        return Integer(1)  # Quality is tinyint
    if pa.types.is_integer(arrow_type):
        return Integer(4)
    return NVarChar(4000)


HISTORY_TYPES: tuple[ColumnType, ...] = tuple(_history_type(c.arrow_type) for c in HISTORY_COLUMNS)
"""The wire type of each History column (`HISTORY_COLUMNS` order)."""

# Columns of few distinct values in one answer, encoded once per value.
_FEW_VALUES = frozenset(
    index
    for index, c in enumerate(HISTORY_COLUMNS)
    if c.source in ("TagName", "Quality", "QualityDetail", "OPCQuality", "wwTagKey")
)
# The columns that vary within one answer; the echoed ww* query parameters do not.
_VARYING = frozenset(
    index
    for index, c in enumerate(HISTORY_COLUMNS)
    if c.source
    in ("DateTime", "TagName", "Value", "vValue", "Quality", "QualityDetail", "OPCQuality",
        "wwTagKey", "StartDateTime")
)  # fmt: skip


@dataclass
class Faults:
    """Failures to inject into History answers, each once (tests only).

    `drop_after_rows`: close the connection after that many rows of an answer.
    `stall_after_rows`: stop sending after that many rows for `stall_s` seconds (longer than
    the client's query timeout), then close the connection.
    A fault stays armed until an answer reaches its row count, then it is disarmed (set the
    field of `server.faults` again to re-arm it); a drop goes first when both are armed.
    """

    drop_after_rows: int | None = None
    stall_after_rows: int | None = None
    stall_s: float = 30.0


class _Dropped(Exception):
    """The connection was closed on purpose (an injected fault)."""


class HistorianTdsServer(BridgeServer):
    """A threading TDS listener answering from the emulator store at `path`.

    Start with `serve_forever()` (or `start_background`); stop with `close()`, which also
    ends the connections still open.
    """

    def __init__(
        self,
        path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str,
        password: str,
        server_timezone: str = "America/Chicago",
        batch_rows: int = DEFAULT_BATCH_ROWS,
        faults: Faults | None = None,
        certificate: Certificate | None = None,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self.path = Path(path)
        self.emulator = HistorianEmulator(self.path, server_timezone)
        self.batch_rows = batch_rows
        self.faults = faults or Faults()
        self.history_rows_encoded = 0
        """Rows of History answers encoded so far (all connections): lets a test see that an
        answer is streamed, not built before it is sent."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._serving = threading.Event()
        self._open: set[socket.socket] = set()
        super().__init__(
            host,
            port,
            certificate or _certificate(),
            query_handler=None,
            database=DATABASE,
            logins=_SqlLogin(user, password),
        )
        self.RequestHandlerClass = _Handler

    def armed_fault(self) -> tuple[str, int] | None:
        """The fault armed for History answers now: (kind, rows); a drop goes first."""
        with self._lock:
            if self.faults.drop_after_rows is not None:
                return ("drop", self.faults.drop_after_rows)
            if self.faults.stall_after_rows is not None:
                return ("stall", self.faults.stall_after_rows)
        return None

    def fire(self, kind: str) -> bool:
        """Disarms the fault `kind`; False if another answer fired it meanwhile."""
        with self._lock:
            field = f"{kind}_after_rows"
            armed = getattr(self.faults, field) is not None
            setattr(self.faults, field, None)
            return armed

    def count_encoded(self, rows: int) -> None:
        with self._lock:
            self.history_rows_encoded += rows

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving.set()
        super().serve_forever(poll_interval)

    def close(self) -> None:
        """Stop listening and end every open connection (a stalled answer too)."""
        self._closing.set()
        if self._serving.is_set():
            self.shutdown()  # waits for serve_forever to return; it never would if not started
        self.server_close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _SqlLogin:
    """The one SQL login the server admits. pysqlbridge's own store compares passwords with
    `hmac.compare_digest` on str, which refuses non-ASCII text; this compares their UTF-8."""

    configured = True

    def __init__(self, user: str, password: str) -> None:
        self._user, self._password = user.lower(), password.encode()

    def admits(self, user: str, password: str) -> bool:
        # User names match without regard to case, as on a default SQL Server installation.
        return hmac.compare_digest((user or "").lower().encode(), self._user.encode()) & \
            hmac.compare_digest((password or "").encode(), self._password)


_shared_certificate: Certificate | None = None


def _certificate() -> Certificate:
    """One self-signed certificate per process: generating an RSA key is slow."""
    global _shared_certificate
    if _shared_certificate is None:
        _shared_certificate = self_signed()
    return _shared_certificate


def serve(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    user: str,
    password: str,
    server_timezone: str = "America/Chicago",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Serve the emulator store at `path` over TDS until interrupted; `ready` is called with
    the (host, port) listened on once connections are accepted."""
    server = HistorianTdsServer(
        path, host, port, user=user, password=password,
        server_timezone=server_timezone, batch_rows=batch_rows,
    )  # fmt: skip
    try:
        if ready is not None:
            ready(server.address)
        server.serve_forever()
    finally:
        server.close()


def start_background(
    path: str | Path,
    *,
    user: str,
    password: str,
    host: str = "127.0.0.1",
    port: int = 0,
    server_timezone: str = "America/Chicago",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    faults: Faults | None = None,
) -> tuple[HistorianTdsServer, tuple[str, int]]:
    """A server on its own thread (port 0: a free one) and its (host, port); `close()` it."""
    server = HistorianTdsServer(
        path, host, port, user=user, password=password, server_timezone=server_timezone,
        batch_rows=batch_rows, faults=faults,
    )  # fmt: skip
    threading.Thread(target=server.serve_forever, name="tds-server", daemon=True).start()
    return server, server.address


class _Handler(socketserver.BaseRequestHandler):
    """Moves bytes between one client socket and its `_HistorianConnection`."""

    server: HistorianTdsServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30.0)  # a client that connects and says nothing
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        with self.server._lock:
            self.server._open.add(sock)
        connection = _HistorianConnection(self.server, sock)
        try:
            while not self.server._closing.is_set():
                data = sock.recv(RECV_SIZE)
                if not data:
                    return
                for response in connection.receive(data):
                    sock.sendall(response)
                if connection.state is ConnectionState.READY:
                    sock.settimeout(None)  # a pooled connection may idle; keepalive reaps it
                if connection.state is ConnectionState.FAILED:
                    return
        except _Dropped:
            pass
        except OSError as error:
            log.info("client %s:%s went away: %s", *self.client_address[:2], error)
        except Exception as error:  # noqa: BLE001 - a broken client must not end the server
            log.warning("client %s:%s failed: %s", *self.client_address[:2], error)
        finally:
            with self.server._lock:
                self.server._open.discard(sock)
            try:
                sock.close()
            except OSError:
                pass


class _HistorianConnection(Connection):
    """pysqlbridge's connection, with SQL batches answered here: History answers are streamed
    to the socket as they are encoded instead of being built whole."""

    def __init__(self, server: HistorianTdsServer, sock: socket.socket) -> None:
        super().__init__(
            server.certificate,
            query_handler=_transactions_only,
            database=server.database,
            reached_at=server.reached_at,
            logins=server.logins,
        )
        self._server = server
        self._sock = sock
        self._pushed_back = None

    def _take_message(self):  # type: ignore[no-untyped-def]
        if self._pushed_back is not None:
            message, self._pushed_back = self._pushed_back, None
            return message
        return super()._take_message()

    def _step_query(self, responses: list[bytes]) -> bool:
        message = self._take_message()
        if message is None:
            return False
        if message.type is not PacketType.SQL_BATCH or message.status & (
            PacketStatus.RESET_CONNECTION | PacketStatus.RESET_CONNECTION_SKIP_TRAN
        ):
            # RPC, attention, transaction requests, session resets: pysqlbridge's own answers.
            self._pushed_back = message
            return super()._step_query(responses)
        self._asked += 1
        self._last_query = sql = parse_sql_batch(message.payload, self._tds_version)
        # What is queued so far goes out first: a streamed answer is written straight to the
        # socket.
        for response in responses:
            self._sock.sendall(response)
        responses.clear()
        writer = _PacketWriter(self._sock.sendall, self._spid, self._wrap)
        try:
            self._answer(sql, writer)
        except QueryError as error:
            writer.write(self._failed(error))
        except (_Dropped, OSError):
            raise
        except Exception as error:  # noqa: BLE001 - a bug here must not end the session
            log.exception("failed to answer: %s", sql)
            writer.write(self._failed(QueryError(f"the historian emulator failed: {error}")))
        writer.finish()
        return True

    def _wrap(self, data: bytes) -> bytes:
        if self._session_encrypted and self._tunnel is not None:
            return self._tunnel.wrap(data)
        return data

    def _failed(self, error: QueryError) -> bytes:
        """The ERROR token and the DONE that ends a failed batch."""
        return error_token(
            error.number, str(error), server=self._server_name, severity=error.severity,
            state=error.state, tds_version=self._tds_version,
        ) + done(status=DoneStatus.ERROR, tds_version=self._tds_version)  # fmt: skip

    def _answer(self, sql: str, writer: _PacketWriter) -> None:
        statement = parse_batch(sql)
        if isinstance(statement, HistorySelect):
            self._stream_history(statement, writer)
        elif isinstance(statement, HistoryCount):
            writer.write(self._encode(_count_result(self._server, statement)))
        elif isinstance(statement, CatalogSelect):
            writer.write(self._encode(_catalog_result(self._server.path, statement)))
        else:
            writer.write(done(tds_version=self._tds_version))

    def _encode(self, result: QueryResult) -> bytes:
        return result.encode(self._tds_version, server=self._server_name)

    def _stream_history(self, statement: HistorySelect, writer: _PacketWriter) -> None:
        batches = _history_batches(self._server, statement.query)
        types = HISTORY_TYPES
        if self._tds_version < TDS_73A:
            types = tuple(
                _DownLevelDateTime2(27) if isinstance(t, DateTime2) else t for t in types
            )
        columns = [Column(name, types[index]) for index, name in statement.columns]
        writer.write(col_metadata(columns, self._tds_version))
        fault = self._server.armed_fault()
        sent = 0
        encode: Callable[[list[tuple]], bytes] | None = None
        try:
            for batch in batches:
                if encode is None:
                    encode = _row_encoder(statement.columns, types, batch[0])
                if fault and sent + len(batch) >= fault[1] and self._server.fire(fault[0]):
                    writer.write(encode(batch[: fault[1] - sent]))
                    self._inject(fault[0], fault[1], writer)
                writer.write(encode(batch))
                sent += len(batch)
                self._server.count_encoded(len(batch))
        except (QueryError, _Dropped, OSError):
            raise
        except Exception as error:  # noqa: BLE001 - reported to the client, the stream ends
            log.exception("History answer failed")
            writer.write(self._failed(QueryError(f"History retrieval failed: {error}")))
            return
        writer.write(
            done(
                status=DoneStatus.COUNT, current_command=SELECT_COMMAND, row_count=sent,
                tds_version=self._tds_version,
            )  # fmt: skip
        )

    def _inject(self, kind: str, rows: int, writer: _PacketWriter) -> None:
        writer.flush_packets()
        log.info("injected fault: %s after %d rows", kind, rows)
        if kind == "stall":
            self._server._closing.wait(self._server.faults.stall_s)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Dropped(kind)


_TRANSACTION_STATEMENTS = ("BEGIN TRANSACTION", "COMMIT", "ROLLBACK", "SAVE TRANSACTION")


def _transactions_only(query: Query) -> QueryResult:
    """What pysqlbridge passes on: transaction requests (nothing to do on a read-only store)
    are answered empty; RPC calls are refused."""
    if query.procedure is None and query.sql.upper().startswith(_TRANSACTION_STATEMENTS):
        return QueryResult(columns=[], rows=[])
    raise QueryError(
        "the historian emulator answers SQL batches only, not RPC calls: " + query.sql[:200]
    )


def _history_batches(server: HistorianTdsServer, query: HistoryQuery) -> Iterator[list[tuple]]:
    """The emulator's rows for `query`; its refusals (an unemulated mode, a bad time zone) as
    the client's query errors. The first batch is fetched here, so that they surface before
    anything of the answer is sent."""
    try:
        batches = server.emulator.query(query, server.batch_rows)
        first = next(batches, None)
    except (ValueError, FileNotFoundError) as error:
        raise QueryError(str(error)) from None
    return iter(()) if first is None else itertools.chain((first,), batches)


def _row_encoder(
    selected: tuple[tuple[int, str], ...], types: tuple[ColumnType, ...], first: tuple
) -> Callable[[list[tuple]], bytes]:
    """Encodes History rows for the `selected` columns, column by column.

    The echoed ww* columns are constant in one answer, so they are encoded once, from the
    first row; the varying columns are encoded a batch at a time through memo tables (few
    distinct qualities, keys and tag names; `StartDateTime` repeats `DateTime`), and the rows
    are joined in one call (the columns are zipped row by row, so `_LastMoment` sees a row's
    DateTime just before its StartDateTime).
    """
    # Pieces of a row: (column index, value encoder) or constant bytes.
    pieces: list[tuple[int, Callable[[object], bytes]] | bytes] = [_ROW]
    moments = _LastMoment()
    for index, _ in selected:
        if index in _VARYING:
            encoder = _fast_encoder(types[index])
            if index in _FEW_VALUES:
                encoder = _Memo(encoder).__getitem__
            elif encoder is encode_datetime2:
                encoder = moments.encode
            pieces.append((index, encoder))
        elif isinstance(pieces[-1], bytes):
            pieces[-1] += types[index].encode(first[index])
        else:
            pieces.append(types[index].encode(first[index]))
    plan = tuple(pieces)

    def encode(rows: list[tuple]) -> bytes:
        columns = []
        for piece in plan:
            if isinstance(piece, bytes):
                columns.append(itertools.repeat(piece, len(rows)))
            else:
                index, encoder = piece
                columns.append(map(encoder, map(operator.itemgetter(index), rows)))
        return b"".join(itertools.chain.from_iterable(zip(*columns)))

    return encode


class _Memo(dict):
    """Encoded values by value: each distinct value of a column encoded once."""

    def __init__(self, encode: Callable[[object], bytes]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, value: object) -> bytes:
        encoded = self[value] = self.encode(value)
        return encoded


class _LastMoment:
    """datetime2 encoding that reuses the last result for the same object (a History row's
    StartDateTime is its DateTime)."""

    def __init__(self) -> None:
        self.value: object = object()
        self.encoded = b""

    def encode(self, value: object) -> bytes:
        if value is not self.value:
            self.value, self.encoded = value, encode_datetime2(value)  # type: ignore[arg-type]
        return self.encoded


def _fast_encoder(kind: ColumnType) -> Callable[[object], bytes]:
    if isinstance(kind, DateTime2):
        return encode_datetime2  # type: ignore[return-value]
    if isinstance(kind, Float):
        pack = _FLOAT8.pack
        return lambda value: b"\x00" if value is None else pack(8, value)  # type: ignore[misc]
    if isinstance(kind, NVarChar) and not isinstance(kind, _DownLevelDateTime2):
        pack = _USHORT.pack

        def text(value: object) -> bytes:
            if value is None:
                return b"\xff\xff"
            encoded = value.encode("utf-16-le", "surrogatepass")  # type: ignore[attr-defined]
            return pack(len(encoded)) + encoded

        return text
    return kind.encode


class _PacketWriter:
    """Frames a token stream as TABULAR_RESULT packets of the negotiated size while it is
    written: full packets go to `sink` in blocks; only the last packet carries END_OF_MESSAGE."""

    def __init__(
        self,
        sink: Callable[[bytes], None],
        spid: int,
        wrap: Callable[[bytes], bytes],
        packet_size: int = DEFAULT_PACKET_SIZE,
    ) -> None:
        self._sink = sink
        self._spid = spid
        self._wrap = wrap
        self._body = packet_size - HEADER_SIZE
        self._buffer = bytearray()
        self._packet_id = 1

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= SEND_BLOCK_BYTES:
            self.flush_packets()

    def flush_packets(self) -> None:
        """Send everything buffered, the rest in a short packet: before an injected fault, so
        that the rows written so far are on the wire."""
        self._send(final=False, everything=True)

    def finish(self) -> None:
        self._send(final=True)

    def _send(self, final: bool, everything: bool = False) -> None:
        data, body = self._buffer, self._body
        out = bytearray()
        offset = 0
        # Without `everything`, up to one packet's worth stays buffered for the next write.
        while len(data) - offset > body or (everything and offset < len(data)):
            chunk = data[offset : offset + body]
            out += self._header(PacketStatus.NORMAL, len(chunk)) + chunk
            offset += len(chunk)
        if final:
            out += self._header(PacketStatus.END_OF_MESSAGE, len(data) - offset) + data[offset:]
            offset = len(data)
        del data[:offset]
        if out:
            self._sink(self._wrap(bytes(out)))

    def _header(self, status: PacketStatus, length: int) -> bytes:
        header = _HEADER.pack(
            PacketType.TABULAR_RESULT, status, HEADER_SIZE + length, self._spid, self._packet_id, 0
        )
        self._packet_id = (self._packet_id + 1) % 256
        return header


def _count_result(server: HistorianTdsServer, statement: HistoryCount) -> QueryResult:
    """Points per tag of the rows the same History SELECT returns; tags without rows are not
    listed (GROUP BY makes no empty group)."""
    counts = server.emulator.count(statement.query)
    names = statement.names
    return QueryResult(
        columns=[Column(names[0], NVarChar(256)), Column(names[1], Integer(4))],
        rows=[[tag, n] for tag, n in sorted(counts.items()) if n],
    )


def _catalog_result(path: Path, statement: CatalogSelect) -> QueryResult:
    """The SELECT run on a read-only connection to the store; SQLite's errors as SQL Server's."""
    if not path.exists():
        raise QueryError(f"historian emulator store {path} does not exist")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        cursor = conn.execute(statement.sqlite)
        rows = cursor.fetchall()
        names = statement.names or tuple(d[0] for d in cursor.description)
    except sqlite3.Error as error:
        raise _sql_server_error(str(error)) from None
    finally:
        conn.close()
    columns = [
        Column(name, _inferred_type([row[i] for row in rows])) for i, name in enumerate(names)
    ]
    return QueryResult(columns=columns, rows=[list(row) for row in rows])


def _sql_server_error(message: str) -> QueryError:
    if message.startswith("no such column: "):
        name = message.removeprefix("no such column: ").rsplit(".", 1)[-1]
        return QueryError(f"Invalid column name '{name}'.", number=INVALID_COLUMN)
    if message.startswith("no such table: "):
        name = message.removeprefix("no such table: ")
        return QueryError(f"Invalid object name '{name}'.", number=INVALID_OBJECT)
    if "syntax error" in message:
        return QueryError(f"Incorrect syntax: {message}", number=INCORRECT_SYNTAX)
    return QueryError(f"catalog query failed: {message}")


_INT32 = range(-(2**31), 2**31)


def _inferred_type(values: list[object]) -> ColumnType:
    """A column's wire type from its values (SQLite has no declared result types)."""
    present = [v for v in values if v is not None]
    if not present:
        return NVarChar(4000)
    if all(isinstance(v, int) for v in present):
        fits = all(v in _INT32 for v in present)  # type: ignore[operator]
        return Integer(4) if fits else Integer(8)
    if all(isinstance(v, (int, float)) for v in present):
        return Float(8)
    if all(isinstance(v, bytes) for v in present):
        return VarBinary(8000)
    longest = max(len(str(v)) for v in present)
    return NVarChar(4000 if longest <= 4000 else None)


__all__ = [
    "DateTime2",
    "Faults",
    "HISTORY_TYPES",
    "HistorianTdsServer",
    "serve",
    "start_background",
]
