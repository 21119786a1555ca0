"""The Dagster instance on PostgreSQL (deploy/dagster.postgres.yaml): a PostgreSQL server the
test starts itself (the `pgserver` wheel's binaries, or the machine's; never a server already
running), dagster-webserver and dagster-daemon on it, and the same backfill as the UI test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
import yaml

from ww_assets_tests.conftest import REPO
from ww_assets_tests.services.dagster_services import dagster_home, dagster_services
from ww_assets_tests.services.graphql import stop_sensor
from ww_assets_tests.services.postgres import postgres_server
from ww_assets_tests.services.user_path import (
    SYNC_SENSOR,
    Stopwatch,
    backfill_and_verify,
    create_plant_and_catalog,
    shut_down,
    ui_env,
)

POSTGRES_YAML = REPO / "deploy" / "dagster.postgres.yaml"

INSTANCE_INFO = "query Instance { instance { info } }"


def test_postgres_variant_differs_only_in_storage() -> None:
    """Run queue, pools, retries: the PostgreSQL instance behaves like the default one."""
    default = yaml.safe_load((REPO / "dagster.yaml").read_text())
    postgres = yaml.safe_load(POSTGRES_YAML.read_text())
    storage = postgres.pop("storage")
    assert postgres == default
    db = storage["postgres"]["postgres_db"]
    # every connection setting comes from the environment, none is written in the file
    assert {k: v for k, v in db.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


def test_backfill_on_a_postgres_instance(
    ww_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Stopwatch()
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=3), today - timedelta(days=2)
    with postgres_server(tmp_path / "logs") as pg:
        clock.lap(f"postgres {pg.bin_dir} on :{pg.port}")
        for name, value in pg.env.items():
            monkeypatch.setenv(name, value)
        home = dagster_home(tmp_path / "dagster_home", POSTGRES_YAML)
        env = ui_env(ww_env, home, today, monkeypatch)
        settings, chunks = create_plant_and_catalog(env, days=3, tags=8)
        clock.lap("plant and tag catalog")

        with dagster_services(env, tmp_path / "logs") as ui:
            clock.lap("webserver up")
            info = ui.webserver.graphql(INSTANCE_INFO)["instance"]["info"]
            assert "PostgresRunStorage" in info and "PostgresEventLogStorage" in info, info
            # this test is about storage: no sync runs competing with the backfill
            stop_sensor(ui.webserver.graphql, SYNC_SENSOR)
            keys = backfill_and_verify(ui, settings, chunks, first, last, clock)
            shut_down(ui, clock)

        # the runs and their events are in PostgreSQL, nothing in SQLite files
        with psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user,
                              password=pg.password, dbname=pg.database) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
                succeeded = cursor.fetchone()[0]
                cursor.execute(
                    "SELECT count(DISTINCT partition) FROM event_logs "
                    "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
                    ['["wonderware", "history"]'],
                )
                partitions = cursor.fetchone()[0]
        conn.close()
    assert succeeded >= 3  # the catalog and one backfill run per day
    assert partitions == len(keys)
    assert not list(home.rglob("*.db"))
