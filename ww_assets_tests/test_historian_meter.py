"""The historian meter's ledger: per-hour figures shared through a file, the last 24 h summed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from ww_assets.historian_meter import LEDGER_HOURS, HistorianLedger


def test_the_ledger_sums_the_last_day_and_keeps_two(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, 0, 30, tzinfo=timezone.utc)]
    ledger = HistorianLedger(tmp_path / "load.json", clock=lambda: now[0])
    for hour in range(60):
        now[0] = datetime(2026, 12, 1, 0, 30, tzinfo=timezone.utc) + timedelta(hours=hour)
        ledger.add("read", 2, 100, 0.5)
        ledger.add("count", 1, 40, 0.25)
    # another process's ledger on the same file sees the same figures
    other = HistorianLedger(tmp_path / "load.json", clock=lambda: now[0])
    summary = other.summary()
    assert summary["read"] == {"queries": 48, "rows": 2_400, "seconds": 12.0}
    assert summary["count"] == {"queries": 24, "rows": 960, "seconds": 6.0}
    assert summary["catalog"] == {"queries": 0, "rows": 0, "seconds": 0.0}
    assert summary["queries_per_minute"] == round(72 / 1440, 4)
    assert len(other._load()) == LEDGER_HOURS


def test_an_empty_ledger_reports_zeros(tmp_path: Path) -> None:
    summary = HistorianLedger(tmp_path / "none.json").summary()
    assert summary["read"]["queries"] == 0 and summary["queries_per_minute"] == 0
