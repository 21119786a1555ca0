"""Dagster resources: one per external system. Assets never touch drivers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from ww_assets.config import Settings
from ww_assets.historian import (
    EmulatorHistorian,
    GuardedHistorian,
    HistorianClient,
    SqlServerHistorian,
)
from ww_assets.historian_meter import HistorianLedger, MeteredHistorian
from ww_assets.resilience import CircuitBreaker
from ww_assets.tag_cache import TagCache
from ww_assets.warehouse import ChdbWarehouse, ServerWarehouse, Warehouse


class HistorianResource(dg.ConfigurableResource):
    """The AVEVA Historian: SQL Server through pymssql when `host` is set, else the emulator."""

    host: str | None = None
    port: int = 1433
    database: str = "Runtime"
    username: str | None = None
    password: str | None = None
    login_timeout_s: int = 15
    query_timeout_s: int = 600
    retrieval_mode: str = "Full"
    tag_types: list[int] = [1, 2, 3]
    emulator_path: str = ".ww/historian.sqlite"
    emulator_timezone: str = "America/Chicago"
    batch_rows: int = 100_000
    breaker_dir: str = ".ww/breakers"
    breaker_threshold: int = 5
    breaker_reset_s: int = 60
    ledger_path: str = ".ww/historian_load.json"

    def client(self) -> MeteredHistorian:
        """The backend behind a circuit breaker shared by every process on this machine,
        metered (`client().load`: queries, rows and seconds per kind)."""
        client = self._backend()
        key = hashlib.sha1(client.describe().encode()).hexdigest()[:12]
        breaker = CircuitBreaker(
            Path(self.breaker_dir) / f"historian-{key}.json",
            client.describe(),
            threshold=self.breaker_threshold,
            reset_s=self.breaker_reset_s,
        )
        ledger = HistorianLedger(Path(self.ledger_path))
        return MeteredHistorian(GuardedHistorian(client, breaker), ledger=ledger)

    def _backend(self) -> HistorianClient:
        if self.host:
            return SqlServerHistorian(
                host=self.host,
                port=self.port,
                database=self.database,
                username=self.username,
                password=self.password,
                tag_types=tuple(self.tag_types),
                retrieval_mode=self.retrieval_mode,
                login_timeout_s=self.login_timeout_s,
                query_timeout_s=self.query_timeout_s,
                batch_rows=self.batch_rows,
            )
        return EmulatorHistorian(
            Path(self.emulator_path),
            tag_types=tuple(self.tag_types),
            retrieval_mode=self.retrieval_mode,
            server_timezone=self.emulator_timezone,
            batch_rows=self.batch_rows,
        )


class WarehouseResource(dg.ConfigurableResource):
    """ClickHouse: a server through dagster-clickhouse when `host` is set, else chDB."""

    host: str | None = None
    port: int = 9000
    user: str = "default"
    password: str = ""
    database: str = "wonderware"
    chdb_path: str = ".ww/clickhouse"

    def warehouse(self) -> Warehouse:
        if self.host:
            # Imported here: clickhouse-driver costs every run and sensor process ~0.2 s.
            from dagster_clickhouse import ClickhouseResource

            server = ClickhouseResource(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                # The connection's default database: the driver's greeting needs one, and
                # `self.database` may not exist yet (every statement names it anyway).
                database="default",
                settings={"server_side_params": True},
            )
            return ServerWarehouse(server, self.database)
        return ChdbWarehouse(Path(self.chdb_path), self.database)


class TagCacheResource(dg.ConfigurableResource):
    """The Redis tag-list cache; `url` unset means no cache."""

    url: str | None = None
    ttl_s: int = 3600

    def cache(self, warn=None) -> TagCache:  # type: ignore[no-untyped-def]
        return TagCache(self.url, self.ttl_s, warn)


def _secret(value: str | None, name: str) -> str | None:
    """Secrets stay env-var references in the UI instead of plain text."""
    return dg.EnvVar(name) if value else None  # type: ignore[return-value]


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "historian": HistorianResource(
            host=settings.wonderware_host,
            port=settings.wonderware_port,
            database=settings.wonderware_database,
            username=settings.wonderware_username,
            password=_secret(settings.wonderware_password, "WONDERWARE_PASSWORD"),
            login_timeout_s=settings.login_timeout_s,
            query_timeout_s=settings.query_timeout_s,
            retrieval_mode=settings.retrieval_mode,
            tag_types=list(settings.tag_types),
            emulator_path=str(settings.historian_sqlite),
            emulator_timezone=settings.emulator_timezone,
            batch_rows=settings.batch_rows,
            breaker_dir=str(settings.breaker_dir),
            breaker_threshold=settings.breaker_threshold,
            breaker_reset_s=settings.breaker_reset_s,
            ledger_path=str(settings.historian_ledger),
        ),
        "warehouse": WarehouseResource(
            host=settings.clickhouse_host,
            port=settings.clickhouse_port,
            user=settings.clickhouse_user,
            password=_secret(settings.clickhouse_password or None, "CLICKHOUSE_PASSWORD") or "",
            database=settings.clickhouse_db,
            chdb_path=str(settings.chdb_path),
        ),
        # A Redis URL may hold a password: the UI shows the variable, not the value.
        "tag_cache": TagCacheResource(
            url=_secret(settings.redis_url, "REDIS_URL"), ttl_s=settings.tag_cache_ttl_s
        ),
    }


def initialized_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources for use outside a Dagster run (the CLI): `build_resources` with their
    `dg.EnvVar` secrets resolved, which Dagster does only for runs and sensors (an unresolved
    one is the variable's *name*, and would be sent as the password)."""
    return {name: resource.process_config_and_initialize()
            for name, resource in build_resources(settings).items()}  # fmt: skip
