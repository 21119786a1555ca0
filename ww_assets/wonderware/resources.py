"""Dagster resources: one per external system, with methods named for what the assets, checks
and jobs do with it. Definitions never hold a driver or a session."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import PrivateAttr

from ww_assets.catalog import CatalogChange, refresh_catalog
from ww_assets.check_sql import (
    Duplicates,
    Summary,
    WindowReport,
    duplicate_keys,
    newest_point,
    summarize,
    window_report,
)
from ww_assets.config import Settings
from ww_assets.historian import (
    EmulatorHistorian,
    GuardedHistorian,
    HistorianClient,
    SqlServerHistorian,
    TagInfo,
)
from ww_assets.historian_meter import HistorianLedger, HistorianLoad, MeteredHistorian
from ww_assets.history_store import (
    SliceStats,
    active_tags_by_chunk,
    append_after,
    counts_by_bucket,
    ensure_schema,
    read_active_tags,
    replace_slice,
    tag_watermarks,
)
from ww_assets.reconcile_sql import counts_by_day_and_tag
from ww_assets.resilience import CircuitBreaker
from ww_assets.rollup_sql import RollupStats, replace_rollup_day
from ww_assets.tag_cache import TagCache
from ww_assets.warehouse import ChdbWarehouse, HeldSessions, ServerWarehouse, Warehouse


class HistorianResource(dg.ConfigurableResource):
    """The AVEVA Historian: SQL Server through pymssql when `host` is set, else the emulator.
    Every query goes through a circuit breaker shared by every process on this machine and is
    metered (queries, rows and seconds per kind, also in the machine's ledger)."""

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

    _metered: MeteredHistorian | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._metered = None  # each run its own client

    def list_tags(self) -> list[TagInfo]:
        """The historian's tags of the configured types (system-driver tags excluded)."""
        return self._client().list_tags()

    def read_history(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        """The stored points of `tags` in [start, end) UTC, in Arrow batches."""
        return self._client().read_history(tags, start, end)

    def count_points(
        self, tags: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, int]:
        """Stored points per tag in [start, end) UTC: what `read_history` returns."""
        return self._client().count_points(tags, start, end)

    @contextmanager
    def metered(self) -> Iterator[HistorianLoad]:
        """The load of the queries made inside, counted apart: one step's figures for its
        metadata (`.metadata()`)."""
        client = self._client()
        outer, client.load = client.load, HistorianLoad()
        try:
            yield client.load
        finally:
            client.load = outer

    def client(self) -> MeteredHistorian:
        """A new client: the backend behind its circuit breaker, metered (the CLI pings and
        describes it; definitions use the methods above)."""
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

    def _client(self) -> MeteredHistorian:
        if self._metered is None:
            self._metered = self.client()
        return self._metered

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
    """ClickHouse: a server through dagster-clickhouse when `host` is set, else chDB. Each
    method runs in a session of its own, or inside `held_session()` in the one held there."""

    host: str | None = None
    port: int = 9000
    user: str = "default"
    password: str = ""
    database: str = "wonderware"
    chdb_path: str = ".ww/clickhouse"

    _store: Warehouse | None = PrivateAttr(default=None)
    _held: HeldSessions | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store, self._held = None, None

    @contextmanager
    def held_session(self) -> Iterator[None]:
        """Inside, the calls share one session (`HeldSessions`): its background merges go on
        between them, and a sync or check that waits gets in after at most 5 s."""
        held = HeldSessions(self._warehouse())
        outer, self._held = self._held, held
        try:
            with held:
                yield
        finally:
            self._held = outer

    def release_session(self) -> None:
        """Close the held session now: what follows needs no warehouse for a while."""
        if self._held is not None:
            self._held.close()

    def refresh_catalog(
        self,
        discovered: list[TagInfo],
        chunk_size: int,
        register_chunks: Callable[[list[str]], None],
    ) -> CatalogChange:
        """Record `discovered` in `WonderwareTags` (`catalog.refresh_catalog`)."""
        return refresh_catalog(discovered, self._session(), chunk_size, register_chunks)

    def active_tags(self) -> dict[str, list[str]]:
        """Every chunk of the catalog with its active tags (the schema checked first)."""
        return read_active_tags(self._session())

    def catalog_and_watermarks(
        self, since: datetime
    ) -> tuple[dict[str, list[str]], dict[str, datetime]]:
        """In one session: every chunk's active tags, and each tag's newest point at or after
        `since` (the schema checked first)."""
        store = self._session()
        with store.connect() as conn:
            ensure_schema(conn, store.database)
            tags = active_tags_by_chunk(conn, store.database)
            return tags, tag_watermarks(conn, store.database, since)

    def tag_watermarks(self, since: datetime) -> dict[str, datetime]:
        """Each tag's newest point at or after `since` (tags with none are absent)."""
        store = self._session()
        with store.connect() as conn:
            return tag_watermarks(conn, store.database, since)

    def replace_slice(
        self, tags: list[str], start: datetime, end: datetime, batches: Iterable[pa.RecordBatch]
    ) -> SliceStats:
        """Make the rows of `tags` in [start, end) exactly their rows in `batches`
        (`history_store.replace_slice`)."""
        return replace_slice(self._session(), tags, start, end, batches)

    def append_after(
        self, after: Mapping[str, datetime], end: datetime, batches: Iterable[pa.RecordBatch]
    ) -> SliceStats:
        """Each tag's rows in (after[tag], end) made exactly its rows in `batches`
        (`history_store.append_after`)."""
        return append_after(self._session(), after, end, batches)

    def counts_by_bucket(
        self, tags: list[str], start: datetime, end: datetime, bucket_s: int
    ) -> dict[tuple[str, datetime], int]:
        """Rows per (tag, bucket start) in [start, end), buckets of `bucket_s` seconds."""
        store = self._session()
        with store.connect() as conn:
            return counts_by_bucket(conn, store.database, tags, start, end, bucket_s)

    def counts_by_day_and_tag(
        self, tags: list[str], first: date, last: date
    ) -> dict[tuple[date, str], int]:
        """Rows per (UTC day, tag) for the days first..last."""
        store = self._session()
        with store.connect() as conn:
            return counts_by_day_and_tag(conn, store.database, tags, first, last)

    def check_days(
        self, tags: list[str], days: list[date], now: datetime, *, duplicates: bool, windows: bool
    ) -> tuple[Summary, dict[date, Duplicates], dict[date, WindowReport]]:
        """What the history checks of a chunk's `days` ask ClickHouse, in one session: the
        days' summary, and when asked the duplicate keys and the rows outside their window."""
        store = self._session()
        with store.connect() as conn:
            summary = summarize(conn, store.database, tags, days, now)
            dups = duplicate_keys(conn, store.database, summary) if duplicates else {}
            outside = window_report(conn, store.database, summary) if windows else {}
        return summary, dups, outside

    def newest_point(self, now: datetime) -> datetime | None:
        """The newest point not dated after `now` (the schema checked first)."""
        store = self._session()
        with store.connect() as conn:
            ensure_schema(conn, store.database)
            return newest_point(conn, store.database, now)

    def replace_rollup_day(self, day: date) -> RollupStats:
        """Make the 1-minute rollup of `day` exactly the aggregate of its raw points."""
        return replace_rollup_day(self._session(), day)

    def warehouse(self) -> Warehouse:
        """A new store (the CLI's `ww init`, `ww status` and `ww doctor` use it; definitions
        use the methods above)."""
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

    def _warehouse(self) -> Warehouse:
        if self._store is None:
            self._store = self.warehouse()
        return self._store

    def _session(self) -> Warehouse:
        return self._held if self._held is not None else self._warehouse()


class TagCacheResource(dg.ConfigurableResource):
    """The Redis tag-list cache; `url` unset means no cache. `warn` gets what went wrong
    with Redis (a cache that fails is skipped, not an error)."""

    url: str | None = None
    ttl_s: int = 3600

    def cache_tags(self, tags: list[str], warn: Callable[[str], None]) -> bool:
        """Store `tags` as the cached list; whether the cache took it."""
        return TagCache(self.url, self.ttl_s, warn).put(tags)

    def cached_tags_or_cache(
        self, tags: list[str], warn: Callable[[str], None]
    ) -> list[str] | None:
        """The cached tag list; when none is cached, `tags` are cached and None is returned."""
        cache = TagCache(self.url, self.ttl_s, warn)
        cached = cache.get()
        if cached is None:
            cache.put(tags)
        return cached


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
