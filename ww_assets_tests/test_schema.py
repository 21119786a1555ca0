"""The schema is created once, by `ww init`, with its version recorded; everything else only
checks it. On a server (its connection class driven on chDB by the stand-in driver of
`test_server_statements`) runs refuse a warehouse without it in one line, sending no DDL;
`ww doctor` never issues DDL, embedded or not."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from ww_assets.catalog import refresh_catalog
from ww_assets.historian import TagInfo
from ww_assets.history_store import (
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    SchemaError,
    ensure_schema,
    init_schema,
    schema_version,
)
from ww_assets.rollup_sql import replace_rollup_day
from ww_assets.warehouse import ChdbWarehouse, ServerWarehouse
from ww_assets_tests.conftest import REPO
from ww_assets_tests.services.processes import BIN, service_env
from ww_assets_tests.test_server_statements import (  # noqa: F401
    ChdbBackedResource,
    _forget_checked_servers,
    _inserts_on_chdb,
)

TAGS = [TagInfo("Tank 1.Level", 1, None, 0.0, 10.0, "m")]


def _writes(sent: list[str]) -> list[str]:
    return [s for s in sent if not s.startswith("SELECT")]


def test_a_server_without_the_schema_is_refused_until_ww_init(tmp_path: Path) -> None:
    resource = ChdbBackedResource(tmp_path / "clickhouse")
    server = ServerWarehouse(resource, "wonderware")
    with pytest.raises(SchemaError, match=r"database wonderware has no ww_assets schema: run `ww init`"):
        refresh_catalog(TAGS, server, 10)
    with pytest.raises(SchemaError, match="run `ww init`"):
        replace_rollup_day(server, datetime(2025, 6, 1).date())
    assert _writes(resource.sent) == []  # no CREATE DATABASE, no table, no row
    with server.connect() as conn:
        assert init_schema(conn, "wonderware") is None
        assert schema_version(conn, "wonderware") == SCHEMA_VERSION
        assert init_schema(conn, "wonderware") == SCHEMA_VERSION  # idempotent
        recorded = conn.query(f"SELECT count() AS n FROM wonderware.{SCHEMA_TABLE}")
    assert recorded.column("n")[0].as_py() == 1
    resource.sent.clear()
    assert refresh_catalog(TAGS, server, 10).new_tags == ["Tank 1.Level"]
    assert not any(s.startswith(("CREATE", "DROP", "ALTER")) for s in resource.sent)


def test_an_older_or_newer_schema_is_named_with_both_versions(tmp_path: Path) -> None:
    resource = ChdbBackedResource(tmp_path / "clickhouse")
    server = ServerWarehouse(resource, "wonderware")
    with server.connect() as conn:
        init_schema(conn, "wonderware")
        conn.command(f"INSERT INTO wonderware.{SCHEMA_TABLE} (Version) VALUES (7)")
        with pytest.raises(SchemaError, match=f"schema version 7, newer than this ww_assets's {SCHEMA_VERSION}"):
            ensure_schema(conn, "wonderware")
        with pytest.raises(SchemaError, match="upgrade ww_assets"):
            init_schema(conn, "wonderware")
        conn.command(f"TRUNCATE TABLE wonderware.{SCHEMA_TABLE}")
        conn.command(f"INSERT INTO wonderware.{SCHEMA_TABLE} (Version) VALUES (1)")
        with pytest.raises(SchemaError, match=f"schema version 1; this ww_assets needs version {SCHEMA_VERSION}: run `ww init` to migrate"):
            ensure_schema(conn, "wonderware")
        assert init_schema(conn, "wonderware") == 1
        ensure_schema(conn, "wonderware")


def _ww(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ww"), *args], cwd=REPO, capture_output=True, text=True,
                          env=service_env({"WW_HOME": str(home)}), timeout=300)  # fmt: skip


def test_doctor_reads_and_init_creates_the_schema_once(tmp_path: Path) -> None:
    """Embedded: `ww doctor` reports that the schema is missing and creates nothing (not
    even the database); `ww init` creates it and records its version; doctor then names it."""
    home = tmp_path / "ww"
    assert _ww(home, "simulate", "create", "--days", "0.05", "--tags", "3").returncode == 0
    with ChdbWarehouse(home / "clickhouse", "wonderware").connect():
        pass  # a store without the schema (not even the database)
    doctor = _ww(home, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    line = next(line for line in doctor.stdout.splitlines() if line.startswith("warehouse"))
    assert "has no ww_assets schema" in line and "(done on first use)" in line, line
    with ChdbWarehouse(home / "clickhouse", "wonderware").connect() as conn:
        assert schema_version(conn, "wonderware") is None
        databases = conn.query("SELECT name FROM system.databases").column("name").to_pylist()
    assert "wonderware" not in databases
    first, again = _ww(home, "init"), _ww(home, "init")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.startswith(f"schema version {SCHEMA_VERSION} created: chDB (embedded)")
    assert again.stdout.startswith(f"schema version {SCHEMA_VERSION} already current")
    doctor = _ww(home, "doctor")
    assert f"schema version {SCHEMA_VERSION}" in doctor.stdout and doctor.returncode == 0
