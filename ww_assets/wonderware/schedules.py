"""The schedules of the wonderware domain: the sync's alternative trigger, the nightly refresh
of the most recent days (late data the sync's recount did not reach), the reconciliation."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timezone

import dagster as dg

from ww_assets.config import ConfigError, Settings
from ww_assets.wonderware.jobs import history_job
from ww_assets.wonderware.partitions import TAG_CHUNKS
from ww_assets.wonderware.run_requests import refresh_request, sync_request


@contextmanager
def cron_setting(variable: str, value: str) -> Iterator[str]:
    """`value` for the schedule built inside: when Dagster rejects it as a cron expression,
    the error names the variable it came from."""
    try:
        yield value
    except dg.DagsterInvalidDefinitionError as error:
        raise ConfigError(
            f"{variable}={value!r} is not a cron expression Dagster accepts ({error})"
        ) from None


def build_sync_schedule(settings: Settings, sync_job) -> dg.ScheduleDefinition:
    with cron_setting("WONDERWARE_PIPELINE_SYNC_SCHEDULE", settings.sync_schedule) as cron:

        @dg.schedule(
            name="history_sync_schedule",
            job=sync_job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        )
        def history_sync_schedule(context: dg.ScheduleEvaluationContext):
            """The alternative trigger of the sync (WONDERWARE_PIPELINE_SYNC_SCHEDULE); stop
            the sensor when you start this."""
            return sync_request(context.instance)

    return history_sync_schedule


def build_refresh_schedule(settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="history_refresh_schedule",
        job=history_job,
        cron_schedule="15 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def history_refresh_schedule(context: dg.ScheduleEvaluationContext):
        """After midnight UTC, re-materializes the last WONDERWARE_PIPELINE_REFRESH_DAYS days
        of every chunk, so late points the sync's lookback missed become exact."""
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        today = context.scheduled_execution_time.astimezone(timezone.utc).date()
        request = refresh_request(
            chunks, today, settings.refresh_days, settings.backfill_oldest_time.date()
        )
        if request is None:
            return dg.SkipReason(
                "no tag chunks yet: materialize wonderware/tags" if not chunks else
                "no complete day since WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME yet"
            )  # fmt: skip
        return request

    return history_refresh_schedule


def build_reconcile_schedule(
    settings: Settings, reconcile_job: dg.JobDefinition
) -> dg.ScheduleDefinition:
    with cron_setting(
        "WONDERWARE_PIPELINE_RECONCILE_SCHEDULE", settings.reconcile_schedule
    ) as cron:
        return dg.ScheduleDefinition(
            name="wonderware_reconcile_schedule",
            job=reconcile_job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Nightly reconciliation (WONDERWARE_PIPELINE_RECONCILE_SCHEDULE).",
        )
