"""The version gate against a real old ClickHouse server: Debian's clickhouse-server 18.16, run
from its extracted packages (`make test-old-clickhouse` fetches them with apt-get into
`$WW_OLD_CLICKHOUSE` and runs this file). It speaks the native protocol to clickhouse-driver
through dagster-clickhouse's resource, as a production server does; `ww doctor` and the first
loads refuse it in one line and write nothing, not even the database. Past the gate (bypassed
on purpose), it is the one real server here to receive the server path's Native insert blocks
over TCP and read them back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets.emulator.plant import create_plant
from ww_assets.warehouse import MIN_SERVER_VERSION
from ww_assets_tests.conftest import REPO, Pipeline, free_port
from ww_assets_tests.services.processes import BIN, service_env

pytestmark = pytest.mark.old_clickhouse

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>information</level><log>{dir}/server.log</log>
        <errorlog>{dir}/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{port}</tcp_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <mark_cache_size>5368709</mark_cache_size>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <profiles><default></default></profiles>
    <quotas><default></default></quotas>
</yandex>
"""


@dataclass
class OldServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def client(self):  # type: ignore[no-untyped-def]
        from clickhouse_driver import Client

        return Client(host="127.0.0.1", port=self.port, database="default")

    def databases(self) -> set[str]:
        return {row[0] for row in self.client().execute("SHOW DATABASES")}

    def user_tables(self) -> int:
        return self.client().execute("SELECT count() FROM system.tables WHERE database != 'system'")[0][0]


@pytest.fixture
def old_server(tmp_path: Path) -> Iterator[OldServer]:
    root = os.environ.get("WW_OLD_CLICKHOUSE")
    assert root, "WW_OLD_CLICKHOUSE is unset: run `make test-old-clickhouse`, which fetches the server"
    root_dir = Path(root) / "root"
    binary = root_dir / "usr" / "sbin" / "clickhouse-server"
    assert binary.exists(), f"no {binary}: run `make test-old-clickhouse`"
    port, run = free_port(), tmp_path / "old-clickhouse"
    run.mkdir()
    (run / "config.xml").write_text(_CONFIG.format(dir=run, port=port))
    libs = ":".join(str(root_dir / p) for p in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"))
    log = run / "stdout.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary), f"--config-file={run / 'config.xml'}"], cwd=run, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "LD_LIBRARY_PATH": libs},
        )  # fmt: skip
    server = OldServer(port, process, run / "error.log")
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"clickhouse-server exited: {log.read_text()}"
        try:
            assert server.client().execute("SELECT version()")[0][0] == "18.16.1"
            break
        except Exception as error:  # the driver's NetworkError while the server starts
            assert time.monotonic() < deadline, f"old ClickHouse not up: {error}"
        time.sleep(0.2)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _refusal(port: int) -> str:
    minimum = ".".join(map(str, MIN_SERVER_VERSION))
    return (f"ClickHouse server 127.0.0.1:{port} runs ClickHouse 18.16.1; "
            f"ww_assets needs ClickHouse {minimum} or newer")  # fmt: skip


def test_doctor_and_init_refuse_the_old_server_in_one_line_and_write_nothing(
    old_server: OldServer, tmp_path: Path
) -> None:
    env = service_env({"WW_HOME": str(tmp_path / "ww")})
    ww = str(BIN / "ww")
    created = subprocess.run([ww, "simulate", "create", "--days", "0.1", "--tags", "5"],
                             cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert created.returncode == 0, created.stderr
    result = subprocess.run(
        [ww, "doctor"], cwd=REPO, capture_output=True, text=True,
        env={**env, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(old_server.port)},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    warehouse = [line for line in result.stdout.splitlines() if line.startswith("warehouse")]
    assert warehouse == [f"warehouse  FAIL  {_refusal(old_server.port)}"], result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert old_server.databases() == {"default", "system"}
    assert old_server.user_tables() == 0

    init = subprocess.run(
        [ww, "init"], cwd=REPO, capture_output=True, text=True,
        env={**env, "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_PORT": str(old_server.port)},
    )  # fmt: skip
    assert init.returncode == 1 and _refusal(old_server.port) in init.stderr, init.stderr
    assert len(init.stderr.strip().splitlines()) == 1, init.stderr
    assert old_server.databases() == {"default", "system"}


def test_the_first_loads_refuse_the_old_server_before_anything_is_written(
    old_server: OldServer, pipeline: Pipeline, ww_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Dagster materialization of the catalog, then of a history partition: each
    fails at once (not retried: the refusal is permanent) with the one line."""
    now = datetime.now(timezone.utc)
    create_plant(ww_env / "historian.sqlite", now - timedelta(hours=3), now, n_tags=6)
    monkeypatch.setenv("CLICKHOUSE_HOST", "127.0.0.1")
    monkeypatch.setenv("CLICKHOUSE_PORT", str(old_server.port))
    pipeline.reload()

    catalog = pipeline.materialize_tags()
    assert not catalog.success
    failures = catalog.get_step_failure_events()
    assert len(failures) == 1
    assert _refusal(old_server.port) in str(failures[0].step_failure_data.error)
    assert old_server.databases() == {"default", "system"}

    pipeline.instance.add_dynamic_partitions("tag_chunks", ["chunk-0001"])
    day = now.date() - timedelta(days=1)
    history = pipeline.materialize_history(f"chunk-0001|{day}")
    assert not history.success
    failures = history.get_step_failure_events()
    assert failures and all(_refusal(old_server.port) in str(f.step_failure_data.error)
                            for f in failures)  # fmt: skip
    assert old_server.databases() == {"default", "system"}
    assert old_server.user_tables() == 0


@pytest.mark.parametrize("compression", [False, True])
def test_native_blocks_sent_over_the_driver_s_connection_read_back_equal(
    old_server: OldServer, compression: bool
) -> None:
    """`send_insert`, the server path's insert, end to end over TCP: the driver's query, the
    server's sample block, our Native blocks (three of them: `insert_block_size` 1,000), with
    the driver's LZ4 framing when the client compresses. 18.16 is below the version gate, which
    this test bypasses on purpose (it calls `send_insert` on a driver client, not through
    `ServerWarehouse`): it has the protocol, not DateTime64 nor the settings the statements
    send. Its protocol revision (54xxx, below 54454) has block info and no serialization byte;
    the byte a modern server gets is checked against the driver's encoder only
    (test_native_encoding)."""
    import random

    from clickhouse_driver import Client

    from ww_assets.native_insert import send_insert
    from ww_assets_tests.test_native_encoding import arrow_table, random_columns

    if compression:
        pytest.importorskip("clickhouse_cityhash", reason="the driver compresses with clickhouse-cityhash and lz4")
    columns = random_columns(random.Random(5), rows=2500, distinct=300)
    client = Client(host="127.0.0.1", port=old_server.port, database="default",
                    compression=compression, settings={"insert_block_size": 1000})  # fmt: skip
    definition = ", ".join(f"`{name}` {spec}" for name, (spec, _, _) in columns.items())
    client.execute(f"CREATE TABLE native ({definition}) ENGINE = MergeTree ORDER BY k",
                   settings={"allow_experimental_low_cardinality_type": 1})  # fmt: skip
    assert client.connection.server_info.used_revision < 54454
    listed = ", ".join(f"`{name}`" for name in columns)
    sent = send_insert(client, f"INSERT INTO native ({listed}) VALUES", arrow_table(columns), {})
    assert sent == 2500

    stored = client.execute(f"SELECT {listed} FROM native ORDER BY k")
    assert stored == list(zip(*(values for _, _, values in columns.values())))
    assert bool(client.connection.compression) is compression


def test_a_column_the_encoder_refuses_fails_the_insert_and_stores_nothing(old_server: OldServer) -> None:
    """The refusal comes once the server has named the types, mid-statement: the connection is
    dropped (the server discards the statement) and the client's next query reconnects."""
    import pyarrow as pa

    from ww_assets.native_encoding import NativeEncodingError
    from ww_assets.native_insert import send_insert

    client = old_server.client()
    client.execute("CREATE TABLE refused (k UInt64, day Date) ENGINE = MergeTree ORDER BY k")
    table = pa.table({"k": pa.array([1, 2], pa.uint64()), "day": pa.array([1, 2], pa.int32())})
    with pytest.raises(NativeEncodingError, match="column day: no Native encoding here for the ClickHouse type Date"):
        send_insert(client, "INSERT INTO refused (k, day) VALUES", table, {})
    assert client.execute("SELECT count() FROM refused") == [(0,)]


def test_the_server_s_refusal_of_an_insert_is_a_warehouse_error_with_its_code(old_server: OldServer) -> None:
    """Through `_ServerConnection.insert` (the gate bypassed): 18.16 knows no table `missing`."""
    import pyarrow as pa

    from ww_assets.warehouse import WarehouseError, _ServerConnection

    conn = _ServerConnection(old_server.client(), "old server")
    with pytest.raises(WarehouseError, match=r"^old server: Code: 60\.") as refused:
        conn.insert("default.missing", pa.table({"k": pa.array([1], pa.uint64())}))
    assert "default.missing" in str(refused.value), str(refused.value)
