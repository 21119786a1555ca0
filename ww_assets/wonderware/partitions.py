"""Partitions of `wonderware/history`: UTC day × tag chunk."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta

import dagster as dg

TAG_CHUNKS = dg.DynamicPartitionsDefinition(name="tag_chunks")

ROWS_READ = "historian_rows_by_tag"
"""A history partition's metadata: the rows per tag its load read from the historian."""

ONLY_TAGS_TAG = "ww/tags"
"""Run tag: a JSON list of tags; the run loads (and checks) only these tags' slices."""


def daily_partitions(oldest: datetime) -> dg.DailyPartitionsDefinition:
    """Complete UTC days from `oldest`: the history's date dimension and the rollup's days."""
    return dg.DailyPartitionsDefinition(start_date=oldest.strftime("%Y-%m-%d"), timezone="UTC")


def history_partitions(oldest: datetime) -> dg.MultiPartitionsDefinition:
    """Complete UTC days from `oldest` × the registered tag chunks.

    Dimensions sort by name, so a key reads `chunk-0001|2025-01-31`.
    """
    return dg.MultiPartitionsDefinition({"date": daily_partitions(oldest), "chunk": TAG_CHUNKS})


def split_key(key: str) -> tuple[str, date]:
    """(chunk, day) of a history partition key."""
    chunk, _, day = key.partition("|")
    return chunk, date.fromisoformat(day)


def history_key(chunk: str, day: date) -> str:
    return f"{chunk}|{day.isoformat()}"


def only_tags(run_tags: Mapping[str, str]) -> set[str] | None:
    """The tags a run is limited to (`ww/tags`), None for every tag of each chunk."""
    value = run_tags.get(ONLY_TAGS_TAG)
    if value is None:
        return None
    try:
        tags = json.loads(value)
    except ValueError:
        tags = None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise dg.Failure(
            f"run tag {ONLY_TAGS_TAG} must be a JSON list of tag names, got {value[:80]!r}",
            allow_retries=False,
        )
    return set(tags)


def complete_days(today: date, oldest: date, days: int | None = None) -> tuple[date, date] | None:
    """First and last of the `days` complete UTC days before `today` (all of them when None),
    none before `oldest` (the first partition); None when no day is left."""
    last = today - timedelta(days=1)
    first = oldest if days is None else max(today - timedelta(days=days), oldest)
    return (first, last) if first <= last else None
