"""Pure modules: settings from the environment, stable chunk assignment."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ww_assets.chunking import assign_chunks, chunk_key, chunk_number
from ww_assets.config import KNOBS, ConfigError, Settings, redacted_url
from ww_assets_tests.conftest import REPO


def test_defaults_are_embedded() -> None:
    s = Settings.from_env({})
    assert s.wonderware_host is None and s.clickhouse_host is None and s.redis_url is None
    assert s.historian_sqlite.name == "historian.sqlite" and s.chdb_path.name == "clickhouse"
    assert s.home.name == ".ww"
    assert s.retrieval_mode == "Full"
    assert s.tag_types == (1, 2, 3)
    assert s.clickhouse_db == "wonderware"
    assert s.backfill_oldest_time == datetime(2025, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", "ten", "not a whole number"),
        ("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", "0", "at least 1"),
        ("WONDERWARE_PORT", "70000", "at most 65535"),
        ("WONDERWARE_RETRIEVAL_MODE", "Sideways", "not one of"),
        ("WONDERWARE_TAG_TYPES", "analog,bogus", "unknown tag type 'bogus'"),
        ("WONDERWARE_TAG_TYPES", ",", "selects no tag type"),
        ("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "yesterday", "not a date"),
        ("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "2999-01-01", "in the future"),
        ("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "2025-01-01 06:00", "UTC midnight"),
        ("WONDERWARE_EMULATOR_TIMEZONE", "Mars/Olympus", "IANA"),
        ("WONDERWARE_QUALITY_EU_OUTSIDE_MAX_RATIO", "1%", "not a number"),
        ("WONDERWARE_QUALITY_EU_OUTSIDE_MAX_RATIO", "2", "between 0 and 1"),
        ("CLICKHOUSE_DB", "wonder-ware; DROP", "letters, digits"),
        ("WONDERWARE_PIPELINE_SYNC_SCHEDULE", "every minute", "cron"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("REDIS_URL", "redis://", "redis://"),
        ("WONDERWARE_ALERT_WEBHOOK_URL", "notaurl", "http://"),
        ("WONDERWARE_ALERT_WEBHOOK_URL", "ftp://example.com/hook", "http://"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)


def test_good_urls_and_cron_expressions_pass_unchanged() -> None:
    s = Settings.from_env({
        "REDIS_URL": "unix:///run/redis.sock?db=1",
        "WONDERWARE_ALERT_WEBHOOK_URL": "https://hooks.example.com/ww",
        "WONDERWARE_PIPELINE_SYNC_SCHEDULE": "*/5 6-18 * * mon-fri",
    })
    assert s.redis_url == "unix:///run/redis.sock?db=1"
    assert s.alert_webhook_url == "https://hooks.example.com/ww"
    assert s.sync_schedule == "*/5 6-18 * * mon-fri"
    assert Settings.from_env({"REDIS_URL": "redis://:pw@cache:6380/2"}).redis_url


def test_a_url_that_may_hold_a_password_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as error:
        Settings.from_env({"REDIS_URL": "redis//:s3cret@cache:6379/0"})
    assert "s3cret" not in str(error.value)
    assert redacted_url("redis://ww:s3cret@cache:6380/2") == "redis://ww:***@cache:6380/2"
    assert redacted_url("rediss://:s3cret@cache") == "rediss://:***@cache"
    assert redacted_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_retrieval_mode_and_tag_types_are_normalised() -> None:
    s = Settings.from_env({"WONDERWARE_RETRIEVAL_MODE": "full", "WONDERWARE_TAG_TYPES": "string, 1"})
    assert s.retrieval_mode == "Full"
    assert s.tag_types == (1, 3)


@pytest.mark.parametrize("mode", ["Delta", "Cyclic", "Interpolated"])
def test_a_retrieval_mode_that_cannot_copy_exactly_is_refused(mode: str) -> None:
    with pytest.raises(ConfigError, match=f"WONDERWARE_RETRIEVAL_MODE='{mode}' cannot make an exact"):
        Settings.from_env({"WONDERWARE_RETRIEVAL_MODE": mode})


def test_chunk_keys_round_trip_and_sort_in_creation_order() -> None:
    assert chunk_key(1) == "chunk-0001"
    assert chunk_number("chunk-0123") == 123
    assert sorted([chunk_key(10), chunk_key(9)]) == [chunk_key(9), chunk_key(10)]
    with pytest.raises(ValueError):
        chunk_number("0001")


def test_first_assignment_fills_chunks_in_name_order() -> None:
    assigned = assign_chunks({}, ["c", "a", "e", "b", "d"], chunk_size=2)
    assert assigned == {"a": "chunk-0001", "b": "chunk-0001", "c": "chunk-0002",
                        "d": "chunk-0002", "e": "chunk-0003"}


def test_existing_tags_never_move_and_new_tags_fill_the_newest_chunk() -> None:
    existing = assign_chunks({}, [f"t{i:03d}" for i in range(5)], chunk_size=2)
    # new tags sorting before every existing one must not shift anything
    new = assign_chunks(existing, [*existing, "a-new", "zz-new", "m-new"], chunk_size=2)
    assert set(new) == {"a-new", "m-new", "zz-new"}
    assert new["a-new"] == "chunk-0003"  # chunk-0003 held one tag: room for one
    assert new["m-new"] == new["zz-new"] == "chunk-0004"
    assert assign_chunks({**existing, **new}, existing, chunk_size=2) == {}


def test_growing_a_hundred_fold_keeps_every_assignment() -> None:
    existing = assign_chunks({}, [f"tag{i}" for i in range(150)], chunk_size=50)
    grown = {**existing, **assign_chunks(existing, [f"tag{i}" for i in range(15_000)], 50)}
    assert all(grown[t] == c for t, c in existing.items())
    assert len(set(grown.values())) == 300


def test_a_smaller_chunk_size_later_only_affects_new_tags() -> None:
    existing = assign_chunks({}, ["a", "b", "c"], chunk_size=10)
    new = assign_chunks(existing, ["d", "e"], chunk_size=2)
    assert set(existing.values()) == {"chunk-0001"}
    assert new == {"d": "chunk-0002", "e": "chunk-0002"}


class _Recording(dict):
    """An environment that records every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name, default=None):  # type: ignore[no-untyped-def, override]
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return super().__contains__(name)


def variables_read() -> set[str]:
    """Every environment variable `Settings.from_env` looks up."""
    env = _Recording()
    Settings.from_env(env)
    return env.asked


def test_every_variable_is_declared_once_and_read_by_settings() -> None:
    names = [knob.name for knob in KNOBS]
    assert len(names) == len(set(names))
    assert variables_read() == set(names)
    declared = [knob.field for knob in KNOBS]
    settable = {f.name for f in dataclasses.fields(Settings)} - {"backfill_oldest_time_explicit"}
    assert sorted(declared) == sorted(settable)


def test_the_readme_table_is_the_generated_one() -> None:
    """README's configuration table is `python -m ww_assets.config --markdown`'s output."""
    readme = (REPO / "README.md").read_text()
    begin = "<!-- configuration table: generated by `python -m ww_assets.config --markdown` -->\n"
    end = "<!-- end of configuration table -->"
    assert begin in readme and end in readme, "README lost its configuration table markers"
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    generated = subprocess.run(
        [sys.executable, "-m", "ww_assets.config", "--markdown"],
        capture_output=True, text=True, check=True, timeout=60, cwd=REPO,
    ).stdout
    assert table == generated, (
        "README's configuration table differs from the declaration: regenerate it with "
        "`python -m ww_assets.config --markdown`"
    )
    assert generated.count("\n") == len(KNOBS) + 2


def test_ww_config_shows_effective_values_and_sources_with_secrets_masked(
    tmp_path: Path,
) -> None:
    env = {"PATH": os.environ["PATH"], "WW_HOME": str(tmp_path / "home"),
           "WONDERWARE_PASSWORD": "s3cret-sql", "CLICKHOUSE_PASSWORD": "s3cret-ch",
           "REDIS_URL": "redis://ww:s3cret-redis@cache:6380/2",
           "WONDERWARE_ALERT_WEBHOOK_URL": "https://hooks.example.com/s3cret-token",
           "WONDERWARE_PIPELINE_TAG_CHUNK_SIZE": " 20 ", "WONDERWARE_TAG_TYPES": "string"}
    result = subprocess.run([str(Path(sys.executable).parent / "ww"), "config"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()}
    assert list(rows) == [knob.name for knob in KNOBS]
    assert rows["WW_HOME"] == ["env", str(tmp_path / "home")]
    assert rows["WONDERWARE_PASSWORD"] == ["env", "*** (set)"]
    assert rows["CLICKHOUSE_PASSWORD"] == ["env", "*** (set)"]
    assert rows["WONDERWARE_ALERT_WEBHOOK_URL"] == ["env", "*** (set)"]
    assert rows["REDIS_URL"] == ["env", "redis://ww:***@cache:6380/2"]
    assert rows["WONDERWARE_PIPELINE_TAG_CHUNK_SIZE"] == ["env", "20"]
    assert rows["WONDERWARE_TAG_TYPES"] == ["env", "3"]
    assert rows["WONDERWARE_PORT"] == ["default", "1433"]
    assert rows["WONDERWARE_HOST"] == ["default", "(unset)"]
    assert not (tmp_path / "home").exists(), "ww config creates nothing"
    bad = subprocess.run([str(Path(sys.executable).parent / "ww"), "config"],
                         env={**env, "WONDERWARE_PORT": "sql"},
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2
    assert "WONDERWARE_PORT='sql' is not a whole number" in bad.stderr
