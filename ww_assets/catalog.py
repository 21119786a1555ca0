"""Refreshing the tag catalog (`WonderwareTags`): discovery, stable chunks, persistence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from ww_assets.chunking import assign_chunks
from ww_assets.historian import TagInfo
from ww_assets.history_store import (
    TAG_CATALOG_SCHEMA,
    ensure_schema,
    read_catalog,
    write_catalog,
)
from ww_assets.warehouse import Warehouse


@dataclass
class CatalogChange:
    tags: list[str]
    chunks: list[str]
    new_tags: list[str] = field(default_factory=list)
    retired_tags: list[str] = field(default_factory=list)
    new_chunks: list[str] = field(default_factory=list)
    chunks_with_new_tags: list[str] = field(default_factory=list)
    new_tags_by_chunk: dict[str, list[str]] = field(default_factory=dict)
    initial: bool = False
    """True for the first refresh of an empty catalog."""


def refresh_catalog(
    discovered: list[TagInfo],
    warehouse: Warehouse,
    chunk_size: int,
    register_chunks: Callable[[list[str]], None] | None = None,
) -> CatalogChange:
    """Record `discovered` in the catalog; existing tags keep their chunk.

    `register_chunks` gets every chunk of the new catalog before it is written: if it fails,
    the catalog is unchanged and a rerun finds the same new tags and chunks again."""
    if not discovered:
        raise ValueError(
            "the historian listed no tags of the configured types (WONDERWARE_TAG_TYPES); "
            "refusing to mark every tag retired"
        )
    now = datetime.now(timezone.utc)
    with warehouse.connect() as conn:
        ensure_schema(conn, warehouse.database)
        current = read_catalog(conn, warehouse.database).to_pylist()
    existing = {row["TagName"]: row for row in current}
    assigned = assign_chunks({t: r["Chunk"] for t, r in existing.items()}, [t.name for t in discovered], chunk_size)
    names = {t.name for t in discovered}
    rows = [
        {
            "TagName": tag.name,
            "Chunk": existing[tag.name]["Chunk"] if tag.name in existing else assigned[tag.name],
            "TagType": tag.tag_type,
            "Description": tag.description,
            "MinEU": tag.min_eu,
            "MaxEU": tag.max_eu,
            "Unit": tag.unit,
            "Active": 1,
            "FirstSeen": existing[tag.name]["FirstSeen"] if tag.name in existing else now,
            "UpdatedAt": now,
        }
        for tag in discovered
    ]
    retired = sorted(t for t, r in existing.items() if t not in names and r["Active"])
    rows += [{**existing[t], "Active": 0, "UpdatedAt": now} for t in retired]
    old_chunks = {r["Chunk"] for r in current}
    all_chunks = sorted(old_chunks | set(assigned.values()))
    if register_chunks is not None:
        register_chunks(all_chunks)
    with warehouse.connect() as conn:
        write_catalog(conn, warehouse.database, pa.Table.from_pylist(rows, schema=TAG_CATALOG_SCHEMA))
    return CatalogChange(
        tags=sorted(names),
        chunks=all_chunks,
        new_tags=sorted(assigned),
        retired_tags=retired,
        new_chunks=sorted(set(assigned.values()) - old_chunks),
        chunks_with_new_tags=sorted(set(assigned.values())),
        new_tags_by_chunk={
            chunk: sorted(t for t, c in assigned.items() if c == chunk)
            for chunk in sorted(set(assigned.values()))
        },
        initial=not current,
    )
