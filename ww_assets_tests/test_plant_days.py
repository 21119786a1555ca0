"""On embedded defaults the history partitions start at the emulated plant's first day; an
explicit WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME or a real historian keeps the user's choice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ww_assets.config import Settings
from ww_assets.definitions import defs
from ww_assets.emulator.plant import create_plant
from ww_assets.historian import EmulatorHistorian
from ww_assets.plant_days import first_plant_day, with_plant_first_day
from ww_assets.wonderware.keys import HISTORY_KEY

UTC = timezone.utc


def _plant(path: Path, days_back: int, end: datetime) -> datetime:
    now = datetime.now(UTC)
    start = (now - timedelta(days=days_back)).replace(hour=0, minute=0, second=0, microsecond=0)
    create_plant(path, start, end, n_tags=6)
    return start


@pytest.mark.parametrize("days_back", [0, 1, 3, 11])
def test_the_first_day_is_the_plant_s(tmp_path: Path, days_back: int) -> None:
    path = tmp_path / "historian.sqlite"
    start = _plant(path, days_back, datetime.now(UTC))
    client = EmulatorHistorian(path, (1, 2, 3))
    assert first_plant_day(client, datetime.now(UTC).date()) == start.date()


def test_a_plant_that_stopped_yesterday_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "historian.sqlite"
    today = datetime.now(UTC).date()
    start = _plant(path, 4, datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(hours=1))
    assert first_plant_day(EmulatorHistorian(path, (1, 2, 3)), today) == start.date()


def test_embedded_defaults_start_at_the_plant(ww_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME")
    settings = Settings.from_env()
    assert not settings.backfill_oldest_time_explicit
    assert with_plant_first_day(settings) == settings  # no plant yet: unchanged
    ww_env.mkdir(parents=True)
    start = _plant(settings.historian_sqlite, 2, datetime.now(UTC))
    assert with_plant_first_day(settings).backfill_oldest_time == start
    # the code location as `dagster dev` loads it
    partitions = defs().resolve_assets_def(HISTORY_KEY).partitions_def
    dates = partitions.get_partitions_def_for_dimension("date")  # type: ignore[union-attr]
    assert dates.start == start

    # the user's choice stays theirs, and so does a real historian's
    monkeypatch.setenv("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "2025-06-01")
    explicit = Settings.from_env()
    assert with_plant_first_day(explicit) == explicit
    monkeypatch.delenv("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME")
    monkeypatch.setenv("WONDERWARE_HOST", "historian.invalid")
    real = Settings.from_env()
    assert with_plant_first_day(real).backfill_oldest_time == datetime(2025, 1, 1, tzinfo=UTC)
