"""The sensors of the wonderware domain: new tags' history, the sync's trigger, its freshness,
the rollup, the reconciliation's repairs and the failure alerts."""

import json
import time
from collections.abc import Sequence
from datetime import date, datetime, timezone

import dagster as dg

from ww_assets.config import Settings
from ww_assets.wonderware.alerts import FIRST_LOOK_BACK_S, check_alerts, post_alert, run_alerts
from ww_assets.wonderware.jobs import freshness_check_job, history_job
from ww_assets.wonderware.keys import HISTORY_KEY, SYNC_FRESH_KEY, SYNC_KEY, TAGS_KEY
from ww_assets.wonderware.partitions import TAG_CHUNKS, history_key, split_key
from ww_assets.wonderware.reconciliation import DIFFERING
from ww_assets.wonderware.run_requests import (
    cursor_storage_id,
    materializations_after,
    new_tag_history_requests,
    repair_requests,
    sync_request,
)
from ww_assets.wonderware.verdicts import partition_verdicts

# Catalog refreshes read per tick; more wait for the next tick (the cursor keeps the place).
CATALOG_REFRESHES_PER_TICK = 100


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
            context.instance, TAGS_KEY, cursor_storage_id(context.cursor), CATALOG_REFRESHES_PER_TICK
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


def build_sync_sensor(settings: Settings, sync_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="history_sync_sensor",
        job=sync_job,
        minimum_interval_seconds=settings.sync_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def history_sync_sensor(context: dg.SensorEvaluationContext):
        """Requests a sync run every WONDERWARE_PIPELINE_SYNC_INTERVAL seconds unless one is
        already queued or running."""
        return sync_request(context.instance)

    return history_sync_sensor


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


# History materializations read per tick; more wait for the next tick (the cursor keeps the place).
HISTORY_LOADS_PER_TICK = 1000


def build_rollup_sensor(rollup_job) -> dg.SensorDefinition:  # type: ignore[no-untyped-def]
    @dg.sensor(
        name="history_rollup_sensor",
        job=rollup_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def history_rollup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Rolls a day up again after any of its wonderware/history partitions is loaded (a
        backfill, the nightly refresh, a reconciliation repair, new tags): once every chunk
        of the day is loaded and passed its blocking checks, one run of wonderware/history_1min
        for that day. A day with a chunk not loaded or a failed check waits for its next load."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        pending: dict[str, int] = cursor.get("pending", {})  # day -> newest load seen
        records = materializations_after(
            context.instance, HISTORY_KEY, cursor.get("after"), HISTORY_LOADS_PER_TICK
        )
        for record in records:
            if record.partition_key:
                pending[split_key(record.partition_key)[1].isoformat()] = record.storage_id
        after = records[-1].storage_id if records else cursor.get("after")
        chunks = sorted(context.instance.get_dynamic_partitions(TAG_CHUNKS.name))
        keys = {d: [history_key(c, date.fromisoformat(d)) for c in chunks] for d in pending}
        verdicts = partition_verdicts(context.instance, [k for ks in keys.values() for k in ks])
        requests, waiting, dropped = [], {}, []
        for day, newest in sorted(pending.items()):
            of_day = [verdicts[k] for k in keys[day]]
            if of_day and all(v.verified for v in of_day):
                requests.append(dg.RunRequest(run_key=f"rollup-{day}-{newest}", partition_key=day))
            elif of_day and all(v.loaded and not v.failed for v in of_day):
                waiting[day] = newest  # its checks have not finished yet
            else:
                dropped.append(day)  # its next load brings it back
        if dropped:
            context.log.info(
                f"not rolled up until they are loaded and verified: {', '.join(dropped)}"
            )
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps({"after": after, "pending": waiting}),
            skip_reason=None if requests else (
                f"{len(waiting)} days wait for their checks" if waiting
                else "no day to roll up"
            ),
        )  # fmt: skip

    return history_rollup_sensor


def build_reconcile_repair_sensor(reconcile_job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name="reconcile_repair_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[reconcile_job],
        request_job=history_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def reconcile_repair_sensor(context: dg.RunStatusSensorContext):  # type: ignore[no-untyped-def]
        """Requests a run of exactly each wonderware/history partition that the finished
        reconciliation found differing (tags `ww/reason=reconcile`, `ww/reconcile_run`)."""
        run_id = context.dagster_run.run_id
        records = context.instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=HISTORY_KEY), limit=20
        ).records
        found = next(
            (r.asset_observation for r in records if r.event_log_entry.run_id == run_id), None
        )
        if found is None or DIFFERING not in found.metadata:
            return dg.SkipReason(f"reconciliation run {run_id} recorded no findings")
        findings = list(found.metadata[DIFFERING].value)  # type: ignore[arg-type]
        if not findings:
            return dg.SkipReason(f"reconciliation run {run_id}: every partition matches")
        context.log.info(
            f"reloading {len(findings)} partitions: {', '.join(str(f['partition']) for f in findings)}"
        )
        return repair_requests(run_id, findings)

    return reconcile_repair_sensor


def build_alert_sensor(
    settings: Settings, check_keys: Sequence[dg.AssetCheckKey]
) -> dg.SensorDefinition:
    url = settings.alert_webhook_url

    @dg.sensor(
        name="wonderware_failure_alert_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def wonderware_failure_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        """Logs every failed check of the wonderware assets and every failed run, and posts
        each as JSON to WONDERWARE_ALERT_WEBHOOK_URL when it is set."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        since = time.time() - FIRST_LOOK_BACK_S
        checks, check_id = check_alerts(context.instance, check_keys, cursor.get("check", 0), since)
        runs, run_id = run_alerts(context.instance, cursor.get("run", 0), since)
        undelivered = 0
        for alert in [*checks, *runs]:
            context.log.warning(f"ALERT {alert['text']}")
            if url:
                error = post_alert(url, {"source": "ww_assets", **alert})
                if error:
                    undelivered += 1
                    context.log.error(f"alert webhook {url} failed: {error}")
        context.update_cursor(json.dumps({"check": check_id, "run": run_id}))
        if not checks and not runs:
            return dg.SkipReason("no failed checks or runs")
        delivered = "" if not url else f", {len(checks) + len(runs) - undelivered} posted"
        return dg.SkipReason(f"{len(checks)} failed checks, {len(runs)} failed runs{delivered}")

    return wonderware_failure_alert_sensor
