"""Failure alerts: failed checks and failed runs found in the instance after a cursor, and
their delivery as JSON to a webhook."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

FIRST_LOOK_BACK_S = 3600
"""On its first evaluation the sensor reports what failed in the last hour, not all history."""
BATCH = 100


def post_alert(url: str, payload: Mapping[str, object], timeout_s: float = 10.0) -> str | None:
    """POST `payload` as JSON; the error text when it did not go through."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "ww_assets"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        return str(error)
    return None


def _plain(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, object]:
    return {key: value.value for key, value in metadata.items()}


def check_alerts(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], after_id: int, since: float
) -> tuple[list[dict[str, object]], int]:
    alerts: list[tuple[int, dict[str, object]]] = []
    newest = after_id
    for key in check_keys:
        for record in _executions_after(instance, key, after_id, since):
            newest = max(newest, record.id)
            evaluation = record.event.asset_check_evaluation if record.event else None
            if evaluation is None or evaluation.passed:
                continue
            alerts.append(
                (
                    record.id,
                    {
                        "kind": "check_failed",
                        "asset": key.asset_key.to_user_string(),
                        "check": key.name,
                        "partition": evaluation.partition,
                        "severity": evaluation.severity.value,
                        "blocking": bool(evaluation.blocking),
                        "description": evaluation.description,
                        "metadata": _plain(evaluation.metadata),
                        "run_id": record.run_id,
                        "text": (
                            f"check {key.name} failed on {key.asset_key.to_user_string()}"
                            f"{' partition ' + evaluation.partition if evaluation.partition else ''}"
                            f": {evaluation.description or ''}"
                        ),
                    },
                )
            )
    return [alert for _, alert in sorted(alerts, key=lambda a: a[0])], newest


def _executions_after(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, after_id: int, since: float
) -> Iterator[Any]:
    """Every execution record of `key` newer than `after_id` (and not before `since`), newest
    first: the storage pages backwards, BATCH at a time, so a run that failed more partitions
    than a page holds is reported whole."""
    before = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=BATCH, cursor=before
        )
        for record in page:
            if record.id <= after_id or record.create_timestamp < since:
                return
            yield record
        if len(page) < BATCH:
            return
        before = page[-1].id


def run_alerts(
    instance: dg.DagsterInstance, after_id: int, since: float
) -> tuple[list[dict[str, object]], int]:
    records = instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=dg.DagsterEventType.RUN_FAILURE,
            after_storage_id=after_id or None,
            after_timestamp=None if after_id else since,
        ),
        limit=BATCH,
        ascending=True,
    ).records
    run_ids = [r.event_log_entry.run_id for r in records]
    runs = (
        {run.run_id: run for run in instance.get_runs(dg.RunsFilter(run_ids=run_ids))}
        if run_ids
        else {}
    )
    alerts = []
    for record in records:
        run = runs.get(record.event_log_entry.run_id)
        job = run.job_name if run else ""
        message = record.event_log_entry.message or "run failed"
        alerts.append(
            {
                "kind": "run_failed",
                "job": job,
                "run_id": record.event_log_entry.run_id,
                "tags": dict(run.tags) if run else {},
                "description": message,
                "text": f"run {record.event_log_entry.run_id} of {job} failed: {message}",
            }
        )
    return alerts, max((r.storage_id for r in records), default=after_id)
