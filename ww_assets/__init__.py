"""ww_assets: a Dagster code location keeping a ClickHouse copy of an AVEVA Historian."""
