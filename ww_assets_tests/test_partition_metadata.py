"""Each partition of a range run shows its own figures, as the instance's event log keeps them
(what the UI's partition view and its metadata plots read)."""

from __future__ import annotations

import dagster as dg

from ww_assets.history_store import chunk_tags
from ww_assets.wonderware.keys import HISTORY_KEY
from ww_assets_tests.conftest import Pipeline
from ww_assets_tests.plant_fixtures import DAYS, build_trap_plant, stored_points


def latest_metadata(instance: dg.DagsterInstance, key: str) -> dict[str, object]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=HISTORY_KEY, asset_partitions=[key]), limit=1
    ).records
    assert records, f"no materialization of {key}"
    materialization = records[0].asset_materialization
    assert materialization is not None and materialization.partition == key
    return {name: value.value for name, value in materialization.metadata.items()}


def test_a_range_run_records_each_partition_s_own_figures(pipeline: Pipeline) -> None:
    build_trap_plant(pipeline.settings.historian_sqlite)
    assert pipeline.materialize_tags().success
    chunks = pipeline.chunks()
    result = pipeline.materialize_history(f"{chunks[0]}|{DAYS[0]}", f"{chunks[-1]}|{DAYS[-1]}")
    assert result.success
    with pipeline.warehouse.connect() as conn:
        tags = {c: chunk_tags(conn, "wonderware", c) for c in chunks}

    total = 0
    seen_rows = set()
    for chunk in chunks:
        for day in DAYS:
            key = f"{chunk}|{day}"
            points = stored_points(pipeline.settings.historian_sqlite, tags[chunk], day, day)
            metadata = latest_metadata(pipeline.instance, key)
            assert metadata["rows"] == len(points), key
            assert metadata["tags"] == len({p[0] for p in points}), key
            stamps = sorted(p[1] for p in points)
            if points:
                assert str(metadata["min_datetime"]).startswith(stamps[0].replace(" ", "T")[:19])
                assert str(metadata["max_datetime"]).startswith(stamps[-1].replace(" ", "T")[:19])
            assert float(metadata["duration_s"]) >= 0  # type: ignore[arg-type]
            assert metadata["partitions_in_run"] == len(chunks) * len(DAYS)
            assert list(metadata)[:2] == ["rows", "tags"]  # its own figures first in the UI
            total += len(points)
            seen_rows.add(metadata["rows"])
    assert len(seen_rows) > 1  # not one figure copied onto every partition
    assert latest_metadata(pipeline.instance, f"{chunks[0]}|{DAYS[0]}")["run_rows"] == total
