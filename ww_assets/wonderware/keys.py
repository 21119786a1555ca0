"""Names the wonderware definitions share: asset keys, check names and keys, run tags.

The Dagster instance's history and the UI know the assets, checks and runs by them."""

import dagster as dg

TAGS_KEY = dg.AssetKey(["wonderware", "tags"])
HISTORY_KEY = dg.AssetKey(["wonderware", "history"])
SYNC_KEY = dg.AssetKey(["wonderware", "history_sync"])
ROLLUP_KEY = dg.AssetKey(["wonderware", "history_1min"])


ROWCOUNT = "history_rowcount_matches_source"
NO_DUPLICATES = "history_no_duplicate_keys"
IN_WINDOW = "history_timestamps_in_window"
QUALITY = "history_quality_good_ratio"
EU_RANGE = "history_values_within_eu_range"
SYNC_FRESH = "history_sync_lag_within_limit"


BLOCKING_CHECKS = (ROWCOUNT, NO_DUPLICATES, IN_WINDOW)
"""Checks whose failure keeps a day out of the rollup."""
HISTORY_CHECKS = (ROWCOUNT, NO_DUPLICATES, IN_WINDOW, QUALITY, EU_RANGE)

SYNC_FRESH_KEY = dg.AssetCheckKey(SYNC_KEY, SYNC_FRESH)


def history_check_keys() -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(HISTORY_KEY, name) for name in HISTORY_CHECKS]


SYNC_RUN_TAG = "ww/sync"
"""Run tag of every sync run (dagster.yaml lets one run at a time)."""
REASON_TAG = "ww/reason"
"""Run tag: why a run of wonderware/history was requested."""
RECONCILE_RUN_TAG = "ww/reconcile_run"
"""Run tag of a repair run: the reconciliation run that found its partition differing."""
