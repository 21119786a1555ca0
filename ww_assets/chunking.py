"""Stable assignment of tags to chunks. No Dagster import.

A tag keeps its chunk forever. New tags fill the newest chunk up to the chunk size, then open
new chunks; changing the chunk size later only affects where new tags go. So history already
loaded is never re-partitioned, however many tags are added.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

CHUNK_KEY_PATTERN = re.compile(r"^chunk-(\d{4,})$")


def chunk_key(number: int) -> str:
    """Partition key of chunk `number` (1-based): `chunk-0001`; sorts in creation order."""
    if number < 1:
        raise ValueError("chunk numbers start at 1")
    return f"chunk-{number:04d}"


def chunk_number(key: str) -> int:
    match = CHUNK_KEY_PATTERN.match(key)
    if not match:
        raise ValueError(f"{key!r} is not a tag-chunk key like chunk-0001")
    return int(match.group(1))


def assign_chunks(
    existing: Mapping[str, str], tags: Iterable[str], chunk_size: int
) -> dict[str, str]:
    """Chunks for the tags in `tags` that `existing` (tag → chunk key) does not place yet.

    New tags are placed in name order, so the result does not depend on discovery order.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    new_tags = sorted(set(tags) - set(existing))
    if not new_tags:
        return {}
    sizes = Counter(existing.values())
    newest = max((chunk_number(k) for k in sizes), default=0)
    room = chunk_size - sizes[chunk_key(newest)] if newest else 0
    assigned: dict[str, str] = {}
    for tag in new_tags:
        if room <= 0:
            newest += 1
            room = chunk_size
        assigned[tag] = chunk_key(newest)
        room -= 1
    return assigned
