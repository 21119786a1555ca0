"""What the reconciliation compares and records: the days at the configured ages, and the
findings table of its observation of `wonderware/history`."""

from datetime import date, timedelta

import dagster as dg

from ww_assets.config import Settings

DIFFERING = "differing_partitions"
"""The observation's metadata: the partitions that differ, with both counts."""


FINDINGS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("partition", "string"),
        dg.TableColumn("historian_rows", "int"),
        dg.TableColumn("clickhouse_rows", "int"),
        dg.TableColumn("difference", "int"),
        dg.TableColumn("loaded", "bool"),
        dg.TableColumn("verified", "bool"),
    ]
)


def reconcile_days(settings: Settings, today: date) -> list[date]:
    """The complete UTC days to compare: those at the ages in `reconcile_ages` before
    `today`, none before the first history partition; oldest first."""
    oldest = settings.backfill_oldest_time.date()
    days = (today - timedelta(days=age) for age in settings.reconcile_ages)
    return sorted(day for day in days if day >= oldest)
