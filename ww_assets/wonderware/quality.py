"""Data-quality gates of the wonderware domain, bundled: history checks, the sync's
freshness, the 1-minute rollup and its sensor, the reconciliation and the failure alerts."""

import time

import dagster as dg

from ww_assets.config import Settings
from ww_assets.wonderware.alerts import build_alert_sensor
from ww_assets.wonderware.checks import (
    SYNC_FRESH_KEY,
    SYNC_KEY,
    build_history_checks,
    build_sync_freshness_check,
    history_check_keys,
)
from ww_assets.wonderware.reconcile import REASON_TAG, build_reconcile_definitions
from ww_assets.wonderware.rollup import build_rollup_asset, build_rollup_job, build_rollup_sensor

freshness_check_job = dg.define_asset_job(
    "wonderware_freshness_check_job",
    selection=dg.AssetSelection.checks(SYNC_FRESH_KEY),
    description="Evaluates the freshness of wonderware/history_sync on its own.",
    tags={REASON_TAG: "freshness"},
)


def build_freshness_sensor(settings: Settings) -> dg.SensorDefinition:
    max_lag = settings.freshness_max_lag_s

    @dg.sensor(
        name="history_sync_freshness_sensor",
        job=freshness_check_job,
        minimum_interval_seconds=max(60, max_lag),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def history_sync_freshness_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        """Evaluates the sync's freshness check when no sync run has evaluated it for
        WONDERWARE_FRESHNESS_MAX_LAG seconds: a stopped sync still fails freshness."""
        if context.instance.get_latest_materialization_event(SYNC_KEY) is None:
            return dg.SkipReason("wonderware/history_sync has never run")
        latest = context.instance.get_latest_asset_check_evaluation_record(SYNC_FRESH_KEY)
        if latest is not None and time.time() - latest.create_timestamp < max_lag:
            return dg.SkipReason("freshness was evaluated recently")
        return dg.RunRequest()

    return history_sync_freshness_sensor


def build_quality_definitions(settings: Settings) -> dg.Definitions:
    """Everything of issue #4; resources come from the code location."""
    rollup_job = build_rollup_job(settings)
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[build_rollup_asset(settings)],
            asset_checks=[*build_history_checks(settings), build_sync_freshness_check(settings)],
            jobs=[freshness_check_job, rollup_job],
            sensors=[
                build_freshness_sensor(settings),
                build_alert_sensor(settings, [*history_check_keys(), SYNC_FRESH_KEY]),
                build_rollup_sensor(rollup_job),
            ],
        ),
        build_reconcile_definitions(settings),
    )
