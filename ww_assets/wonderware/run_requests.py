"""The runs the sensors and schedules request, and what they read from the instance to
decide: range runs over history partitions, the sync run unless one is active, repair runs."""

import json
from datetime import date, datetime, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.wonderware.keys import REASON_TAG, RECONCILE_RUN_TAG, SYNC_RUN_TAG
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


def refresh_request(
    chunks: list[str], today: date, days: int, oldest: date
) -> dg.RunRequest | None:
    """One range run over every chunk × the `days` complete days before `today`, none
    before `oldest` (the first history partition)."""
    span = complete_days(today, oldest, days)
    if not chunks or span is None:
        return None
    first, last = span
    return dg.RunRequest(
        run_key=f"refresh-{today}",
        tags={
            **range_tags(history_key(chunks[0], first), history_key(chunks[-1], last)),
            "ww/reason": "nightly-refresh",
        },
    )


def repair_requests(run_id: str, findings: list[dict[str, object]]) -> list[dg.RunRequest]:
    """One run per differing partition, tagged with the reconciliation that found it."""
    return [
        dg.RunRequest(
            run_key=f"reconcile:{run_id}:{f['partition']}",
            partition_key=str(f["partition"]),
            tags={
                REASON_TAG: "reconcile",
                RECONCILE_RUN_TAG: run_id,
                "ww/historian_rows": str(f["historian_rows"]),
                "ww/clickhouse_rows": str(f["clickhouse_rows"]),
            },
        )
        for f in findings
    ]


ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def active_sync_run(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running sync run, if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={SYNC_RUN_TAG: "true"}, statuses=ACTIVE_RUN_STATUSES),
        limit=1,
    )
    return runs[0].run_id if runs else None


def sync_request(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    """A sync run, unless one is already queued or running (whichever trigger asks)."""
    running = active_sync_run(instance)
    if running:
        return dg.SkipReason(f"sync run {running} is still queued or running")
    return dg.RunRequest()


def cursor_storage_id(cursor: str | None) -> int | None:
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
