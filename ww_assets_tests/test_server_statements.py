"""The statements the server path sends give the embedded path's results.

No ClickHouse server of a supported version runs here, so the server path's own connection
class (`ServerWarehouse` → `_ServerConnection`, the version gate included) is driven through a
stand-in for clickhouse-driver's `Client.execute` that runs each statement it is sent on chDB:
the SQL and the parameters are the ones the server would get. Inserts go through
`native_insert.send_insert`'s stand-in, which has chDB decode the Native blocks that
`native_encoding` encodes for the server (only the socket flow is left out). The
same catalog, loads, rollup, checks and status then run on the embedded path, and every result
that readers or the checks see is compared."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ww_assets.catalog import refresh_catalog
from ww_assets.historian import EmulatorHistorian
from ww_assets.history_query import day_bounds
from ww_assets.history_store import (
    HISTORY_TABLE,
    TAGS_TABLE,
    active_tags_by_chunk,
    init_schema,
    replace_slice,
    status,
    tag_watermarks,
)
from ww_assets.check_sql import duplicate_keys, summarize
from ww_assets.history_store import ROLLUP_TABLE
from ww_assets.rollup_sql import replace_rollup_day
from ww_assets.emulator.plant import create_plant
from ww_assets.native_encoding import encode_block
from ww_assets.warehouse import ChdbWarehouse, ServerWarehouse, Warehouse, _chdb_param

_INSERT = re.compile(r"^INSERT INTO (?P<db>\w+)\.(?P<table>\w+) \((?P<columns>[^)]*)\) VALUES$")


class ChdbDriver:
    """clickhouse-driver's `Client.execute` as `_ServerConnection` calls it, run on chDB."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.sent: list[str] = []

    def execute(self, query: str, params: Any = None, *, with_column_types: bool = False) -> Any:
        self.sent.append(query)
        assert _INSERT.match(query) is None, "the server path inserts through send_insert"
        text = {k: _chdb_param(v) for k, v in (params or {}).items()}
        result = self.session.query(query, "Arrow", params=text or None)
        table = pa.ipc.open_file(result.get_memview().view()).read_all() if len(result) else pa.table({})
        rows = [tuple(row.values()) for row in table.to_pylist()]
        return (rows, [(f.name, str(f.type)) for f in table.schema]) if with_column_types else rows

    def insert_native(self, query: str, table: pa.Table, settings: dict[str, Any]) -> int:
        """`send_insert`'s part as the server sees it: the INSERT names the columns, the
        server's sample block gives their types, and `encode_block`'s bytes are decoded by
        ClickHouse (chDB) as a Native block (protocol revision 0: the file format, without the
        block info and serialization byte a TCP block has)."""
        self.sent.append(query)
        insert = _INSERT.match(query)
        assert insert is not None, query
        names = [name.strip().strip("`") for name in insert["columns"].split(",")]
        types = dict(self._columns(insert["db"], insert["table"]))
        listed = ", ".join(f"`{n}`" for n in names)
        options = ", ".join(f"{k} = {v}" for k, v in settings.items())
        with tempfile.NamedTemporaryFile(suffix=".native") as block:
            block.write(encode_block(table, [(name, types[name]) for name in names], 0))
            block.flush()
            self.session.query(
                f"INSERT INTO {insert['db']}.{insert['table']} ({listed}) SELECT {listed} "
                f"FROM file('{block.name}', Native){' SETTINGS ' + options if options else ''}",
                "CSV",
            )  # fmt: skip
        return table.num_rows

    def _columns(self, db: str, table: str) -> list[tuple[str, str]]:
        result = self.session.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = {table:String}", "Arrow", params={"db": db, "table": table},
        )  # fmt: skip
        return [tuple(r.values()) for r in pa.ipc.open_file(result.get_memview().view()).read_all().to_pylist()]


class ChdbBackedResource:
    """dagster-clickhouse's `ClickhouseResource` as `ServerWarehouse` uses it."""

    host, port = "chdb-stand-in", 9000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: list[str] = []

    @contextmanager
    def get_connection(self) -> Iterator[ChdbDriver]:
        from chdb import session as chdb_session

        session = chdb_session.Session(str(self.path))
        try:
            driver = ChdbDriver(session)
            yield driver
        finally:
            self.sent.extend(driver.sent)
            session.close()


def _run_everything(warehouse: Warehouse, historian: EmulatorHistorian, day: Any) -> dict[str, Any]:
    """The catalog, a day's partition of each chunk, a sync window over the day's end, the
    rollup, the checks' scan and `ww status`, as the pipeline runs them after `ww init`;
    what they show."""
    with warehouse.connect() as conn:
        init_schema(conn, warehouse.database)
    refresh_catalog(historian.list_tags(), warehouse, 3)
    with warehouse.connect() as conn:
        chunks = active_tags_by_chunk(conn, warehouse.database)
    start, end = day_bounds(day)
    for tags in chunks.values():
        replace_slice(warehouse, tags, start, end, historian.read_history(tags, start, end))
        replace_slice(warehouse, tags, start, end, historian.read_history(tags, start, end))
    every = sorted(t for tags in chunks.values() for t in tags)
    window = (end - timedelta(minutes=30), end + timedelta(minutes=10))
    replace_slice(warehouse, every, *window, historian.read_history(every, *window))
    replace_rollup_day(warehouse, day)
    db = warehouse.database
    with warehouse.connect() as conn:
        summary = summarize(conn, db, every, [day], datetime.now(timezone.utc))
        report = status(conn, db)
        report.pop("lag_seconds")
        points = conn.query(
            "SELECT * EXCEPT LoadId FROM " f"{db}.{HISTORY_TABLE} ORDER BY TagName, DateTime"
        ).to_pylist()
        return {
            "points": points,
            "rollup": conn.query(f"SELECT * EXCEPT LoadId FROM {db}.{ROLLUP_TABLE} "
                                 "ORDER BY TagName, minute_timestamp").to_pylist(),  # fmt: skip
            "catalog": conn.query(f"SELECT TagName, Chunk, TagType, Active FROM {db}.{TAGS_TABLE} "
                                  "FINAL ORDER BY TagName").to_pylist(),  # fmt: skip
            "summary": [(t.tag, t.rows, t.repeated, t.good, t.values, t.future)
                        for t in summary.days[day]],  # fmt: skip
            "duplicates": duplicate_keys(conn, db, summary)[day].keys,
            "watermarks": tag_watermarks(conn, db, window[0]),
            "status": report,
        }


def test_the_server_path_s_statements_give_the_embedded_results(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    day = (now - timedelta(days=1)).date()
    sqlite = tmp_path / "historian.sqlite"
    create_plant(sqlite, datetime.combine(day, datetime.min.time(), timezone.utc), now, n_tags=7)
    historian = EmulatorHistorian(sqlite, (1, 2, 3))
    path = tmp_path / "clickhouse"

    embedded = _run_everything(ChdbWarehouse(path, "embedded"), historian, day)
    resource = ChdbBackedResource(path)
    server = _run_everything(ServerWarehouse(resource, "server"), historian, day)

    assert len(embedded["points"]) > 5000 and embedded["duplicates"] == 0
    for name, value in embedded.items():
        if name == "points":  # the driver hands back Python values: compare them as such
            assert [tuple(map(_same, r.values())) for r in server[name]] == [
                tuple(map(_same, r.values())) for r in value], name  # fmt: skip
        else:
            assert server[name] == value, name
    sent = resource.sent
    assert sent[0] == "SELECT version()"  # the version gate came first ...
    assert not any(s.startswith("CREATE") for s in sent[:3])  # ... before any DDL
    assert any(s.startswith("INSERT INTO server.WonderwareHistoryVersions (") and s.endswith("VALUES")
               for s in sent)  # the Native-block insert path  # fmt: skip
    assert not any("DELETE" in s or "ALTER" in s for s in sent)  # loads only ever insert


def _same(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


@pytest.fixture(autouse=True)
def _inserts_on_chdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """`send_insert`'s socket flow replaced by the stand-in driver's `insert_native`."""
    from ww_assets import warehouse

    monkeypatch.setattr(warehouse, "send_insert", lambda client, query, table, settings:
                        client.insert_native(query, table, settings))  # fmt: skip


@pytest.fixture(autouse=True)
def _forget_checked_servers() -> Iterator[None]:
    from ww_assets import warehouse

    saved = set(warehouse._checked_servers)
    warehouse._checked_servers.clear()
    yield
    warehouse._checked_servers.clear()
    warehouse._checked_servers.update(saved)
