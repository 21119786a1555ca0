"""Why `ww status` reports a lag: the note names the cause a person can act on."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ww_assets.config import Settings
from ww_assets.status_report import age, lag_note
from ww_assets.wonderware.keys import SYNC_KEY


def _settings(**env: str) -> Settings:
    return Settings.from_env({"WONDERWARE_FRESHNESS_MAX_LAG": "300", **env})


def test_no_note_within_the_limit() -> None:
    assert lag_note(_settings(), {"lag_seconds": 299.0}, None) is None
    assert lag_note(_settings(), {"lag_seconds": None}, None) is None


def test_a_backfill_without_a_sync(tmp_path: Path) -> None:
    note = lag_note(_settings(), {"lag_seconds": 4.2 * 3600}, None)
    assert note is not None and note.startswith("newest point 4.2 h ago")
    assert "only complete days were backfilled and no sync has run" in note


def test_a_recent_sync_and_a_quiet_plant() -> None:
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(SYNC_KEY))
        note = lag_note(_settings(), {"lag_seconds": 900.0}, instance)
        assert note is not None and "the sync ran" in note and "`ww simulate live`" in note
        real = lag_note(_settings(WONDERWARE_HOST="historian.plant"), {"lag_seconds": 900.0}, instance)
        assert real is not None and "simulate" not in real


def test_ages_read_as_a_person_says_them() -> None:
    assert [age(s) for s in (45, 720, 4.1 * 3600, 3.2 * 86400)] == ["45 s", "12 min", "4.1 h", "3.2 days"]
