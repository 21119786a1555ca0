"""Jobs of the wonderware domain, and the cron settings of their schedules."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from ww_assets.config import ConfigError
from ww_assets.wonderware.assets import HISTORY_KEY

history_job = dg.define_asset_job(
    "wonderware_history_job",
    selection=dg.AssetSelection.assets(HISTORY_KEY),
    description="Materializes wonderware/history partitions (day × tag chunk).",
)


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
