"""Settings from environment variables, checked once at load time.

Every variable the project reads is declared once, in `KNOBS`: name, the `Settings` field it
sets, how it is read and bounded, default and meaning. `ww config` shows each with its effective
value; the README's table is `python -m ww_assets.config --markdown`. A bad value raises
`ConfigError` naming the variable. No Dagster import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
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
        values = {knob.field: knob.read(r) for knob in KNOBS}
        values["home"] = Path(values["home"]).resolve()
        values["retry_base_delay_s"] = float(values["retry_base_delay_s"])
        return cls(
            **values,
            backfill_oldest_time_explicit=bool(r.optional("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME")),
        )


Kind = Literal[
    "text", "optional", "integer", "ratio", "choice", "ages", "tag_types", "zone",
    "identifier", "utc_time", "cron", "url", "retrieval_mode",
]


@dataclass(frozen=True)
class Knob:
    """One environment variable: the `Settings` field it sets, how it is read, its meaning."""

    name: str
    field: str
    kind: Kind
    default: str | int | float | None
    meaning: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    """`choice`: the allowed values; `url`: the allowed schemes."""
    secret: bool = False
    """Never shown (`ww config` says only whether it is set)."""
    accepts_text: str | None = None
    """What `accepts()` says, where the choices are too many to list."""

    def read(self, r: _Reader) -> object:
        if self.kind == "optional":
            return r.optional(self.name)
        if self.kind == "integer":
            assert isinstance(self.default, int)
            return r.integer(self.name, self.default, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "ratio":
            assert isinstance(self.default, float)
            return r.ratio(self.name, self.default)
        if self.kind == "choice":
            return r.choice(self.name, str(self.default), self.choices)
        if self.kind == "url":
            return r.url(self.name, self.choices)
        read_text: Callable[[str, str], object] = getattr(r, self.kind)
        return read_text(self.name, str(self.default))

    def accepts(self) -> str:
        """What a value must be, for a person."""
        if self.accepts_text is not None:
            return self.accepts_text
        if self.kind == "integer":
            if self.minimum is not None and self.maximum is not None:
                return f"whole number {self.minimum}–{self.maximum}"
            if self.minimum is not None:
                return f"whole number ≥ {self.minimum}"
            return "whole number"
        if self.kind == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.kind == "url":
            return "URL: " + ", ".join(f"`{s}://`" for s in self.choices)
        return {
            "text": "text", "optional": "text", "ratio": "number 0–1",
            "ages": "day ages ≥ 1, comma-separated", "tag_types": "tag types, comma-separated",
            "zone": "IANA time zone", "identifier": "letters, digits, underscores",
            "utc_time": "UTC midnight", "cron": "5-field cron",
        }[self.kind]


_TAG_TYPE_NAMES = ", ".join(TAG_TYPES)

KNOBS: tuple[Knob, ...] = (
    Knob("WW_HOME", "home", "text", ".ww", "where embedded state lives"),
    # historian
    Knob("WONDERWARE_HOST", "wonderware_host", "optional", None,
         "SQL Server of the historian; unset: the emulator on `$WW_HOME/historian.sqlite`"),
    Knob("WONDERWARE_PORT", "wonderware_port", "integer", 1433, "SQL Server port",
         minimum=1, maximum=65535),
    Knob("WONDERWARE_DATABASE", "wonderware_database", "text", "Runtime",
         "the historian's database"),
    Knob("WONDERWARE_USERNAME", "wonderware_username", "optional", None, "SQL Server login"),
    Knob("WONDERWARE_PASSWORD", "wonderware_password", "optional", None,
         "SQL Server password (an env-var reference in Dagster, never shown)", secret=True),
    Knob("WONDERWARE_LOGIN_TIMEOUT", "login_timeout_s", "integer", 15, "seconds to log in",
         minimum=1),
    Knob("WONDERWARE_QUERY_TIMEOUT", "query_timeout_s", "integer", 600,
         "seconds a query may take", minimum=1),
    Knob("WONDERWARE_RETRIEVAL_MODE", "retrieval_mode", "retrieval_mode", "Full",
         "History retrieval mode; only `Full` returns every stored point (Delta drops repeats, "
         "so its result depends on where a window starts)", choices=RETRIEVAL_MODES,
         accepts_text="`Full` (other modes are refused: they cannot make an exact copy)"),
    Knob("WONDERWARE_TAG_TYPES", "tag_types", "tag_types", "analog,discrete,string",
         f"tag types to copy ({_TAG_TYPE_NAMES} or `TagRef.TagType` codes); the system driver's own "
         "tags (`Tag.AcquisitionType` 3) are never copied"),
    Knob("WONDERWARE_EMULATOR_TIMEZONE", "emulator_timezone", "zone", "America/Chicago",
         "the emulator's server time zone (a zone with daylight saving, as plants have)"),
    # warehouse
    Knob("CLICKHOUSE_HOST", "clickhouse_host", "optional", None,
         "ClickHouse server (native protocol, via dagster-clickhouse); unset: chDB at "
         "`$WW_HOME/clickhouse`"),
    Knob("CLICKHOUSE_PORT", "clickhouse_port", "integer", 9000, "native protocol port",
         minimum=1, maximum=65535),
    Knob("CLICKHOUSE_USER", "clickhouse_user", "text", "default", "ClickHouse login"),
    Knob("CLICKHOUSE_PASSWORD", "clickhouse_password", "text", "",
         "ClickHouse password (an env-var reference in Dagster, never shown)", secret=True),
    Knob("CLICKHOUSE_DB", "clickhouse_db", "identifier", "wonderware", "database of the tables"),
    # cache
    Knob("REDIS_URL", "redis_url", "url", None,
         "Redis for the tag-list cache (`MS:wonderware:tags:list`); unset or down: no cache, "
         "one warning (a password in it is never shown)", choices=("redis", "rediss", "unix")),
    # pipeline
    Knob("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", "tag_chunk_size", "integer", 50,
         "tags per chunk for newly discovered tags", minimum=1),
    Knob("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "backfill_oldest_time", "utc_time",
         "2025-01-01 00:00:00",
         "first day (UTC midnight) of the history partitions (the partition grid shows what "
         "exists from there); unset on embedded defaults: the emulated plant's first day"),
    Knob("WONDERWARE_PIPELINE_MAX_PARTITIONS_PER_RUN", "max_partitions_per_run", "integer", 31,
         "partitions per backfill run", minimum=1),
    Knob("WONDERWARE_PIPELINE_BATCH_ROWS", "batch_rows", "integer", 100_000,
         "rows fetched from the historian per batch", minimum=100),
    Knob("WONDERWARE_PIPELINE_TAG_CACHE_TTL", "tag_cache_ttl_s", "integer", 3600,
         "seconds the cached tag list lives", minimum=1),
    Knob("WONDERWARE_PIPELINE_SYNC_SCHEDULE", "sync_schedule", "cron", "*/1 * * * *",
         "cron (UTC) of the alternative sync schedule"),
    Knob("WONDERWARE_PIPELINE_SYNC_INTERVAL", "sync_interval_s", "integer", 60,
         "seconds between sync sensor ticks", minimum=5),
    Knob("WONDERWARE_PIPELINE_SYNC_LOOKBACK", "sync_lookback_s", "integer", 900,
         "seconds before the previous recount that the sync's recount reaches back (how late "
         "a point behind a newer one may arrive and still be healed by the sync), and how long "
         "a tag is quiet before the sweep counts it silent", minimum=0),
    Knob("WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN", "sync_safety_margin_s", "integer", 5,
         "seconds before now the sync stops (the historian's real-time window)", minimum=0),
    Knob("WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK", "sync_initial_lookback_s", "integer", 3600,
         "seconds before now a first sync starts when no daily partition is loaded", minimum=60),
    Knob("WONDERWARE_PIPELINE_SYNC_RUN_TIMEOUT", "sync_run_timeout_s", "integer", 300,
         "seconds a sync run may take (`dagster/max_runtime`)", minimum=10),
    Knob("WONDERWARE_PIPELINE_SYNC_RECOUNT_INTERVAL", "sync_recount_interval_s", "integer", 3600,
         "seconds between the sync's recounts of recent quarter hours (0: every sync)",
         minimum=0),
    Knob("WONDERWARE_PIPELINE_SYNC_SWEEP_INTERVAL", "sync_sweep_interval_s", "integer", 300,
         "seconds between the sync's sweeps of silent tags from their own newest point "
         "(0: every sync)", minimum=0),
    Knob("WONDERWARE_PIPELINE_SYNC_TAGS_PER_READ", "sync_tags_per_read", "integer", 500,
         "most tags in one historian query of the sync", minimum=1),
    Knob("WONDERWARE_PIPELINE_REFRESH_DAYS", "refresh_days", "integer", 1,
         "complete days the nightly refresh re-materializes (each is one more read of every "
         "point)", minimum=1),
    Knob("WONDERWARE_RETRY_ATTEMPTS", "retry_attempts", "integer", 3,
         "tries of one historian/ClickHouse operation on transient faults",
         minimum=1, maximum=20),
    Knob("WONDERWARE_RETRY_BASE_DELAY", "retry_base_delay_s", "integer", 2,
         "seconds d: retry n waits min(d × 2ⁿ⁻¹, 30 s) × a random 0.5–1.5 (±50 % jitter after "
         "the cap, so up to 45 s)", minimum=0),
    Knob("WONDERWARE_STEP_RETRIES", "step_retries", "integer", 2,
         "retries of a failed step after that (transient faults only)", minimum=0, maximum=10),
    Knob("WONDERWARE_STEP_RETRY_DELAY", "step_retry_delay_s", "integer", 15,
         "seconds d: step retry n waits (2ⁿ − 1) × d ± up to d (Dagster's `EXPONENTIAL` "
         "backoff, `PLUS_MINUS` jitter): 0–30 s, then 30–60 s with the defaults", minimum=0),
    Knob("WONDERWARE_BREAKER_THRESHOLD", "breaker_threshold", "integer", 5,
         "consecutive historian failures that open the circuit breaker", minimum=1),
    Knob("WONDERWARE_BREAKER_RESET", "breaker_reset_s", "integer", 60,
         "seconds the breaker stays open before one probe", minimum=1),
    # data quality
    Knob("WONDERWARE_PIPELINE_RECONCILE_AGES", "reconcile_ages", "ages", "7",
         "ages in days (1 = yesterday, comma-separated, like `2,7`) of the days the nightly "
         "reconciliation counts; each age is one COUNT pass over a day"),
    Knob("WONDERWARE_PIPELINE_ROWCOUNT_SOURCE", "rowcount_source", "choice", "load",
         "where `history_rowcount_matches_source` takes the historian's rows when the load ran "
         "in the same run: `load` (what the historian returned to it, no extra query) or "
         "`count` (a COUNT query)", choices=("load", "count")),
    Knob("WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", "reconcile_schedule", "cron", "30 1 * * *",
         "cron (UTC) of the reconciliation"),
    Knob("WONDERWARE_QUALITY_GOOD_MIN_RATIO", "quality_good_min_ratio", "ratio", 0.9,
         "minimum share of good-quality (`Quality = 0`) points per partition (WARN below it)"),
    Knob("WONDERWARE_QUALITY_EU_OUTSIDE_MAX_RATIO", "eu_outside_max_ratio", "ratio", 0.01,
         "maximum share of a partition's analog values outside [MinEU, MaxEU] of their tag "
         "(WARN above it; the emulated plant's rare excursions stay well below it)"),
    Knob("WONDERWARE_FRESHNESS_MAX_LAG", "freshness_max_lag_s", "integer", 300,
         "seconds the newest point may be old before `wonderware/history_sync` fails freshness",
         minimum=1),
    Knob("WONDERWARE_ALERT_WEBHOOK_URL", "alert_webhook_url", "url", None,
         "failed checks and failed runs are POSTed here as JSON (always logged; never shown: "
         "it may hold a token)", choices=("http", "https"), secret=True),
)


def effective(
    environ: Mapping[str, str] | None = None, settings: Settings | None = None
) -> list[tuple[str, str, str]]:
    """(variable, effective value, source) of every knob, secrets masked: what `ww config`
    prints. The source is `env`, `default`, or `derived` where `settings` (default: read from
    `environ`) holds another value than the default, as the code location's partition start on
    embedded defaults. Raises `ConfigError` as `Settings.from_env` does."""
    env = os.environ if environ is None else environ
    read = Settings.from_env(env)
    settings = read if settings is None else settings
    r = _Reader(env)
    rows = []
    for knob in KNOBS:
        value = getattr(settings, knob.field)
        if r.optional(knob.name) is not None:
            source = "env"
        else:
            source = "default" if value == getattr(read, knob.field) else "derived"
        if knob.secret:
            shown = "*** (set)" if value else "(unset)"
        elif value is None:
            shown = "(unset)"
        elif knob.kind == "url":
            shown = redacted_url(str(value))
        else:
            shown = _plain(value)
        rows.append((knob.name, shown, source))
    return rows


def _plain(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def markdown_table() -> str:
    """The README's configuration table, one row per knob."""
    lines = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for knob in KNOBS:
        if knob.default is None:
            default = "unset"
        elif knob.default == "":
            default = "empty"
        else:
            default = f"`{knob.default}`"
        lines.append(f"| `{knob.name}` | {default} | {knob.accepts()} | {knob.meaning} |")
    return "\n".join(lines) + "\n"


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


if __name__ == "__main__":
    # `python -m ww_assets.config --markdown`: the README's configuration table.
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m ww_assets.config --markdown")
    sys.stdout.write(markdown_table())
