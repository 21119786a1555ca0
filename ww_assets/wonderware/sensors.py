"""Sensors of the wonderware domain."""

import json
from datetime import datetime, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.wonderware.assets import TAGS_KEY
from ww_assets.wonderware.jobs import history_job
from ww_assets.wonderware.partitions import ONLY_TAGS_TAG, complete_days, history_key

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """The tags of one range run over the history partitions first_key..last_key."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


def new_tag_history_requests(
    run_keys: dict[str, str],
    settings: Settings,
    today: datetime,
    new_tags: dict[str, list[str]] | None = None,
) -> list[dg.RunRequest]:
    """One range run per chunk that gained tags (chunk -> run key): every complete day since
    the oldest time, limited to the chunk's new tags (`new_tags`, tag `ww/tags`) when known,
    so their chunk-mates' slices are neither read again nor rewritten."""
    new_tags = new_tags or {}
    span = complete_days(today.astimezone(timezone.utc).date(), settings.backfill_oldest_time.date())
    if span is None:
        return []
    first_day, last_day = span
    return [
        dg.RunRequest(
            run_key=run_key,
            tags={
                **range_tags(history_key(chunk, first_day), history_key(chunk, last_day)),
                "ww/reason": "new-tags",
                "ww/chunk": chunk,
                **({ONLY_TAGS_TAG: json.dumps(new_tags[chunk])} if chunk in new_tags else {}),
            },
        )
        for chunk, run_key in sorted(run_keys.items())
    ]


def _storage_id(cursor: str | None) -> int | None:
    """The cursor's storage id; None (start from the first refresh) for no cursor or one
    that is not a number (set by hand in the UI), as Dagster's asset sensors do."""
    try:
        return int(cursor) if cursor else None
    except ValueError:
        return None


def materializations_after(
    instance: dg.DagsterInstance, key: dg.AssetKey, after: int | None, limit: int
) -> list[dg.EventLogRecord]:
    """Up to `limit` materializations of `key` after storage id `after`, oldest first: a
    sensor takes them all, where `@asset_sensor` would see only the newest one."""
    return list(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=limit, ascending=True
    ).records)  # fmt: skip


# Catalog refreshes read per tick; more wait for the next tick (the cursor keeps the place).
MATERIALIZATIONS_PER_TICK = 100


def build_new_tag_history_sensor(settings: Settings) -> dg.SensorDefinition:
    # A plain sensor, not @asset_sensor: that one sees only the newest materialization after
    # its cursor, and the new tags of an earlier refresh in the same interval would be lost.
    @dg.sensor(
        name="new_tag_history_sensor",
        job=history_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def new_tag_history_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        """Loads the past of tags that joined an existing catalog: for every refresh of
        `wonderware/tags` that reports chunks with new tags, requests one range run of
        `wonderware/history` per such chunk over every complete day since
        WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME, loading only the new tags' slices."""
        records = materializations_after(
            context.instance, TAGS_KEY, _storage_id(context.cursor), MATERIALIZATIONS_PER_TICK
        )
        if not records:
            return dg.SkipReason(f"no new materialization of {TAGS_KEY.to_user_string()}")
        cursor = str(records[-1].storage_id)
        run_keys: dict[str, str] = {}  # chunk -> key of the first refresh that reported it
        new_tags: dict[str, set[str]] = {}  # chunk -> the tags to load
        whole: set[str] = set()  # chunks to load whole
        initial = False
        for record in records:
            materialization = record.asset_materialization
            metadata = materialization.metadata if materialization else {}
            initial_value = metadata.get("initial_catalog")
            if initial_value is not None and initial_value.value:
                initial = True
                continue
            chunks_value = metadata.get("chunks_with_new_tags")
            names_value = metadata.get("new_tags_by_chunk")
            names = names_value.value if names_value is not None else {}
            for chunk in chunks_value.value if chunks_value is not None else []:
                run_keys.setdefault(chunk, f"new-tags-{record.storage_id}-{chunk}")
                if chunk in names and (chunk in new_tags or chunk not in whole):
                    new_tags.setdefault(chunk, set()).update(names[chunk])
                else:  # a refresh that did not name its tags: the whole chunk is loaded
                    whole.add(chunk)
                    new_tags.pop(chunk, None)
        if not run_keys:
            reason = (
                "first catalog: the initial backfill is launched by a person"
                if initial
                else "no new tags in the latest catalog refresh"
            )
            return dg.SensorResult(skip_reason=reason, cursor=cursor)
        context.log.info(f"loading the history of new tags in {', '.join(sorted(run_keys))}")
        return dg.SensorResult(
            run_requests=new_tag_history_requests(
                run_keys, settings, datetime.now(timezone.utc),
                {c: sorted(tags) for c, tags in new_tags.items()},
            ),  # fmt: skip
            cursor=cursor,
        )

    return new_tag_history_sensor
