"""The verification budget: a load's rowcount check reuses what the load read (no second pass
over the historian), a check launched alone counts, and the reconciliation counts a day only
at the configured ages."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from ww_assets.config import ConfigError, Settings
from ww_assets.wonderware.keys import ROWCOUNT
from ww_assets.wonderware.reconciliation import reconcile_days
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import DAYS, build_trap_plant

ROWCOUNT_KEY = dg.AssetCheckKey(dg.AssetKey(["wonderware", "history"]), ROWCOUNT)


def _rowcounts(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == ROWCOUNT]


def test_a_load_is_verified_with_what_it_read_and_a_check_alone_counts(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    first, last = f"chunk-0001|{DAYS[0]}", f"chunk-0002|{DAYS[-1]}"
    loaded = pipeline.materialize_history(first, last)
    assert loaded.success
    in_run = _rowcounts(loaded)
    assert len(in_run) == 2 * len(DAYS) and all(e.passed for e in in_run)
    assert {e.metadata["historian_rows_from"].value for e in in_run} == {"load's read"}
    assert sum(e.metadata["expected_rows_historian"].value for e in in_run) > 0

    alone = pipeline.run_checks(first, last, [ROWCOUNT_KEY])
    assert alone.success
    counted = _rowcounts(alone)
    assert {e.metadata["historian_rows_from"].value for e in counted} == {"historian COUNT"}
    assert [e.metadata["expected_rows_historian"].value for e in counted] == [
        e.metadata["expected_rows_historian"].value for e in in_run
    ]


def test_the_reconciliation_counts_only_the_days_at_its_ages() -> None:
    env = {"WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME": "2025-10-01"}
    today = date(2025, 11, 20)
    assert reconcile_days(Settings.from_env(env), today) == [date(2025, 11, 13)]
    ages = Settings.from_env({**env, "WONDERWARE_PIPELINE_RECONCILE_AGES": "7, 2,2"})
    assert reconcile_days(ages, today) == [date(2025, 11, 13), date(2025, 11, 18)]
    # none before the first partition
    assert reconcile_days(ages, date(2025, 10, 4)) == [date(2025, 10, 2)]
    with pytest.raises(ConfigError, match="WONDERWARE_PIPELINE_RECONCILE_AGES='0,x'"):
        Settings.from_env({**env, "WONDERWARE_PIPELINE_RECONCILE_AGES": "0,x"})
