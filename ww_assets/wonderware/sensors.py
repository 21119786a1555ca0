"""Sensors of the wonderware domain."""


from datetime import datetime, timedelta, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.wonderware.assets import TAGS_KEY
from ww_assets.wonderware.jobs import history_job
from ww_assets.wonderware.partitions import history_key

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """The tags of one range run over the history partitions first_key..last_key."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


def new_tag_history_requests(
    chunks: list[str], settings: Settings, today: datetime
) -> list[dg.RunRequest]:
    """One range run per chunk that gained tags: every complete day since the oldest time."""
    last_day = (today.astimezone(timezone.utc) - timedelta(days=1)).date()
    first_day = settings.backfill_oldest_time.date()
    if last_day < first_day:
        return []
    return [
        dg.RunRequest(
            tags={
                **range_tags(history_key(chunk, first_day), history_key(chunk, last_day)),
                "ww/reason": "new-tags",
                "ww/chunk": chunk,
            },
        )
        for chunk in chunks
    ]


def build_new_tag_history_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.asset_sensor(
        asset_key=TAGS_KEY,
        name="new_tag_history_sensor",
        job=history_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def new_tag_history_sensor(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
    ):
        """Loads the past of tags that joined an existing catalog: when `wonderware/tags`
        reports chunks with new tags, requests one range run of `wonderware/history` per such
        chunk over every complete day since WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME."""
        materialization = asset_event.asset_materialization
        metadata = materialization.metadata if materialization else {}
        initial = metadata.get("initial_catalog")
        if initial is not None and initial.value:
            return dg.SkipReason("first catalog: the initial backfill is launched by a person")
        chunks_value = metadata.get("chunks_with_new_tags")
        chunks = list(chunks_value.value) if chunks_value is not None else []
        if not chunks:
            return dg.SkipReason("no new tags in the latest catalog refresh")
        context.log.info(f"loading the history of new tags in {', '.join(chunks)}")
        return new_tag_history_requests(chunks, settings, datetime.now(timezone.utc))

    return new_tag_history_sensor
