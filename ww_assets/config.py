"""Settings from environment variables, checked once at load time.

Every variable the project reads is declared here, with its default and meaning (the README's
table is this list). A bad value raises `ConfigError` naming the variable. No Dagster import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ww_assets.history_query import COPY_MODES, RETRIEVAL_MODES, TAG_TYPES
from ww_assets.resilience import Backoff


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    home: Path
    # historian
    wonderware_host: str | None
    wonderware_port: int
    wonderware_database: str
    wonderware_username: str | None
    wonderware_password: str | None
    login_timeout_s: int
    query_timeout_s: int
    retrieval_mode: str
    tag_types: tuple[int, ...]
    emulator_timezone: str
    # warehouse
    clickhouse_host: str | None
    clickhouse_port: int
    clickhouse_user: str
    clickhouse_password: str
    clickhouse_db: str
    # cache
    redis_url: str | None
    # pipeline knobs
    tag_chunk_size: int
    backfill_oldest_time: datetime
    max_partitions_per_run: int
    batch_rows: int
    tag_cache_ttl_s: int
    sync_schedule: str
    sync_interval_s: int
    sync_lookback_s: int
    sync_safety_margin_s: int
    sync_initial_lookback_s: int
    sync_run_timeout_s: int
    sync_recount_interval_s: int
    sync_sweep_interval_s: int
    sync_tags_per_read: int
    refresh_days: int
    retry_attempts: int
    retry_base_delay_s: float
    step_retries: int
    step_retry_delay_s: int
    breaker_threshold: int
    breaker_reset_s: int
    # data quality
    reconcile_ages: tuple[int, ...]
    rowcount_source: str
    reconcile_schedule: str
    quality_good_min_ratio: float
    eu_outside_max_ratio: float
    freshness_max_lag_s: int
    alert_webhook_url: str | None
    backfill_oldest_time_explicit: bool = True
    """WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME is set (else embedded defaults start the
    partitions at the emulated plant's first day: `ww_assets.plant_days`)."""

    @property
    def historian_sqlite(self) -> Path:
        return self.home / "historian.sqlite"

    @property
    def chdb_path(self) -> Path:
        return self.home / "clickhouse"

    @property
    def breaker_dir(self) -> Path:
        return self.home / "breakers"

    @property
    def historian_ledger(self) -> Path:
        """The historian load of every process on this machine, per hour (`ww status`)."""
        return self.home / "historian_load.json"

    def backoff(self) -> Backoff:
        return Backoff(attempts=self.retry_attempts, base_s=self.retry_base_delay_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        r = _Reader(env)
        return cls(
            home=Path(r.text("WW_HOME", ".ww")).resolve(),
            wonderware_host=r.optional("WONDERWARE_HOST"),
            wonderware_port=r.integer("WONDERWARE_PORT", 1433, minimum=1, maximum=65535),
            wonderware_database=r.text("WONDERWARE_DATABASE", "Runtime"),
            wonderware_username=r.optional("WONDERWARE_USERNAME"),
            wonderware_password=r.optional("WONDERWARE_PASSWORD"),
            login_timeout_s=r.integer("WONDERWARE_LOGIN_TIMEOUT", 15, minimum=1),
            query_timeout_s=r.integer("WONDERWARE_QUERY_TIMEOUT", 600, minimum=1),
            retrieval_mode=r.retrieval_mode("WONDERWARE_RETRIEVAL_MODE", "Full"),
            tag_types=r.tag_types("WONDERWARE_TAG_TYPES", "analog,discrete,string"),
            emulator_timezone=r.zone("WONDERWARE_EMULATOR_TIMEZONE", "America/Chicago"),
            clickhouse_host=r.optional("CLICKHOUSE_HOST"),
            clickhouse_port=r.integer("CLICKHOUSE_PORT", 9000, minimum=1, maximum=65535),
            clickhouse_user=r.text("CLICKHOUSE_USER", "default"),
            clickhouse_password=r.text("CLICKHOUSE_PASSWORD", ""),
            clickhouse_db=r.identifier("CLICKHOUSE_DB", "wonderware"),
            redis_url=r.url("REDIS_URL", ("redis", "rediss", "unix")),
            tag_chunk_size=r.integer("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", 50, minimum=1),
            backfill_oldest_time=r.utc_time(
                "WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "2025-01-01 00:00:00"
            ),
            max_partitions_per_run=r.integer(
                "WONDERWARE_PIPELINE_MAX_PARTITIONS_PER_RUN", 31, minimum=1
            ),
            batch_rows=r.integer("WONDERWARE_PIPELINE_BATCH_ROWS", 100_000, minimum=100),
            tag_cache_ttl_s=r.integer("WONDERWARE_PIPELINE_TAG_CACHE_TTL", 3600, minimum=1),
            sync_schedule=r.cron("WONDERWARE_PIPELINE_SYNC_SCHEDULE", "*/1 * * * *"),
            sync_interval_s=r.integer("WONDERWARE_PIPELINE_SYNC_INTERVAL", 60, minimum=5),
            sync_lookback_s=r.integer("WONDERWARE_PIPELINE_SYNC_LOOKBACK", 900, minimum=0),
            sync_safety_margin_s=r.integer("WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN", 5, minimum=0),
            sync_initial_lookback_s=r.integer(
                "WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK", 3600, minimum=60
            ),
            sync_run_timeout_s=r.integer("WONDERWARE_PIPELINE_SYNC_RUN_TIMEOUT", 300, minimum=10),
            sync_recount_interval_s=r.integer(
                "WONDERWARE_PIPELINE_SYNC_RECOUNT_INTERVAL", 3600, minimum=0
            ),
            sync_sweep_interval_s=r.integer(
                "WONDERWARE_PIPELINE_SYNC_SWEEP_INTERVAL", 300, minimum=0
            ),
            sync_tags_per_read=r.integer("WONDERWARE_PIPELINE_SYNC_TAGS_PER_READ", 500, minimum=1),
            refresh_days=r.integer("WONDERWARE_PIPELINE_REFRESH_DAYS", 1, minimum=1),
            retry_attempts=r.integer("WONDERWARE_RETRY_ATTEMPTS", 3, minimum=1, maximum=20),
            retry_base_delay_s=float(r.integer("WONDERWARE_RETRY_BASE_DELAY", 2, minimum=0)),
            step_retries=r.integer("WONDERWARE_STEP_RETRIES", 2, minimum=0, maximum=10),
            step_retry_delay_s=r.integer("WONDERWARE_STEP_RETRY_DELAY", 15, minimum=0),
            breaker_threshold=r.integer("WONDERWARE_BREAKER_THRESHOLD", 5, minimum=1),
            breaker_reset_s=r.integer("WONDERWARE_BREAKER_RESET", 60, minimum=1),
            reconcile_ages=r.ages("WONDERWARE_PIPELINE_RECONCILE_AGES", "7"),
            rowcount_source=r.choice(
                "WONDERWARE_PIPELINE_ROWCOUNT_SOURCE", "load", ("load", "count")
            ),
            reconcile_schedule=r.cron("WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", "30 1 * * *"),
            quality_good_min_ratio=r.ratio("WONDERWARE_QUALITY_GOOD_MIN_RATIO", 0.9),
            eu_outside_max_ratio=r.ratio("WONDERWARE_QUALITY_EU_OUTSIDE_MAX_RATIO", 0.01),
            freshness_max_lag_s=r.integer("WONDERWARE_FRESHNESS_MAX_LAG", 300, minimum=1),
            alert_webhook_url=r.url("WONDERWARE_ALERT_WEBHOOK_URL", ("http", "https")),
            backfill_oldest_time_explicit=bool(r.optional("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME")),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={raw!r} must be at most {maximum}")
        return value

    def ratio(self, name: str, default: float) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={raw!r} must be between 0 and 1")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name, default)
        by_lower = {c.lower(): c for c in choices}
        if raw.lower() not in by_lower:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return by_lower[raw.lower()]

    def retrieval_mode(self, name: str, default: str) -> str:
        mode = self.choice(name, default, RETRIEVAL_MODES)
        if mode not in COPY_MODES:
            raise ConfigError(
                f"{name}={mode!r} cannot make an exact copy: Delta drops a point equal to the one "
                "before it in each answer, so the rows depend on where a window starts, and the "
                f"other modes return computed rows; use {' or '.join(COPY_MODES)}"
            )
        return mode

    def ages(self, name: str, default: str) -> tuple[int, ...]:
        """Comma-separated day ages (1 = yesterday), each at least 1."""
        raw = self.text(name, default)
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise ConfigError(f"{name}={raw!r} must be day ages of at least 1, like 2,7")
        return tuple(sorted({int(p) for p in parts}))

    def tag_types(self, name: str, default: str) -> tuple[int, ...]:
        raw = self.text(name, default)
        types: list[int] = []
        for part in (p.strip().lower() for p in raw.split(",")):
            if not part:
                continue
            if part.isdigit() and int(part) in TAG_TYPES.values():
                types.append(int(part))
            elif part in TAG_TYPES:
                types.append(TAG_TYPES[part])
            else:
                raise ConfigError(
                    f"{name}={raw!r}: unknown tag type {part!r} (use {', '.join(TAG_TYPES)})"
                )
        if not types:
            raise ConfigError(f"{name}={raw!r} selects no tag type")
        return tuple(sorted(set(types)))

    def zone(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        try:
            ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{name}={raw!r} is not an IANA time zone name") from None
        return raw

    def identifier(self, name: str, default: str) -> str:
        raw = self.text(name, default)
        if not raw.replace("_", "").isalnum() or not raw.isascii() or raw[0].isdigit():
            raise ConfigError(f"{name}={raw!r} must be letters, digits and underscores")
        return raw

    def utc_time(self, name: str, default: str) -> datetime:
        raw = self.text(name, default)
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} is not a date or time like 2025-01-01 or 2025-01-01 00:00:00"
            ) from None
        parsed = parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
        if parsed.astimezone(timezone.utc).time() != datetime.min.time():
            raise ConfigError(f"{name}={raw!r} must be a UTC midnight (partitions are UTC days)")
        if parsed > datetime.now(timezone.utc):
            raise ConfigError(f"{name}={raw!r} is in the future")
        return parsed.astimezone(timezone.utc)

    def cron(self, name: str, default: str) -> str:
        """Five fields; the schedule that takes it checks the rest by Dagster's own rule."""
        raw = self.text(name, default)
        if len(raw.split()) != 5:
            raise ConfigError(
                f"{name}={raw!r} is not a 5-field cron expression (minute hour day month weekday, "
                "e.g. '*/1 * * * *')"
            )
        return raw

    def url(self, name: str, schemes: Sequence[str]) -> str | None:
        raw = self.optional(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        where = parts.path if parts.scheme == "unix" else parts.netloc
        if parts.scheme not in schemes or not where:
            # The value is not echoed: a Redis URL or a webhook URL may hold a secret.
            raise ConfigError(
                f"{name} is not a URL of scheme {' or '.join(s + '://' for s in schemes)} "
                "(its value is not shown: it may hold a password)"
            )
        return raw


def redacted_url(url: str) -> str:
    """`url` with its password, if any, replaced by `***` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
