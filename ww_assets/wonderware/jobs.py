"""Jobs of the wonderware domain."""

import dagster as dg

from ww_assets.wonderware.assets import HISTORY_KEY

history_job = dg.define_asset_job(
    "wonderware_history_job",
    selection=dg.AssetSelection.assets(HISTORY_KEY),
    description="Materializes wonderware/history partitions (day × tag chunk).",
)
