"""Reproducible emulator datasets for the benchmark, written by SQLite itself in bulk.

`ww simulate` models a plant point by point in Python (a few hundred thousand points/s); the
benchmark needs millions of points in seconds. This writer fills the same store (the emulator's
`Points` table, created by `emulator.store`) with one `INSERT ... SELECT` over a recursive
row counter per tag: no Python per point, about 0.7 million points/s on one core. Tags come
from `plant.default_tags` (70/20/10 analog/discrete/string, awkward names included), so the
pipeline sees a plant's rows: floats with their `vValue` text, 0/1 discretes, string tags with
`Value` NULL, some doubtful (16/64) and bad (NULL, 1/0/0) points, millisecond timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ww_assets.emulator import store
from ww_assets.emulator.plant import ANALOG, DISCRETE, SYSTEM_TAGS, default_tags

# One statement per tag. `ms` is the point's offset from the first day's midnight; the text is
# built from whole seconds plus a zero-padded millisecond part, so it is exact (no float
# rounding) and matches `store.format_utc`.
_INSERT = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count),
p(i, ms, h) AS (SELECT i, :offset_ms + i * :interval_ms, (i * 7919 + :salt) % 100003 FROM n)
INSERT INTO Points (TagName, DateTime, Value, VValue, Quality, QualityDetail, OpcQuality)
SELECT :tag,
       strftime('%Y-%m-%d %H:%M:%S', :day, '+' || (ms / 1000) || ' seconds')
         || '.' || printf('%03d', ms % 1000),
       CASE WHEN h % 677 = 5 THEN NULL
            WHEN :kind = 1 THEN round(h * 0.005, 3)
            WHEN :kind = 2 THEN (i / 7) % 2
            ELSE NULL END,
       CASE WHEN h % 677 = 5 THEN NULL
            WHEN :kind = 1 THEN CAST(round(h * 0.005, 3) AS TEXT)
            WHEN :kind = 2 THEN CAST((i / 7) % 2 AS TEXT)
            ELSE 'B2025-' || printf('%04d', i / 3600) END,
       CASE WHEN h % 677 = 5 THEN 1 WHEN h % 331 = 3 THEN 16 ELSE 0 END,
       CASE WHEN h % 677 = 5 THEN 0 WHEN h % 331 = 3 THEN 64 ELSE 192 END,
       CASE WHEN h % 677 = 5 THEN 0 WHEN h % 331 = 3 THEN 64 ELSE 192 END
FROM p
"""


@dataclass(frozen=True)
class Dataset:
    """What `write_dataset` stored: the plant tags (system tags excluded) and the points."""

    tags: tuple[str, ...]
    points: int


def write_dataset(
    path: Path, n_tags: int, days: int, first_day: date, interval_ms: int = 1000, seed: int = 7
) -> Dataset:
    """Store `n_tags` plant tags with one point every `interval_ms` over `days` UTC days.

    Deterministic for the arguments. Each tag's points are offset by a few milliseconds
    (17 ms × its number, modulo the interval), so tags do not share instants.
    """
    if interval_ms < 1 or 86_400_000 % interval_ms:
        raise ValueError(f"interval_ms must divide a day, got {interval_ms}")
    tags = default_tags(n_tags, seed)
    plant = [t for t in tags if t not in SYSTEM_TAGS]
    count = days * (86_400_000 // interval_ms)
    conn = store.connect(path)
    try:
        store.add_tags(conn, tags)
        # A throwaway benchmark store: no durability needed while loading.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        for number, tag in enumerate(plant):
            kind = tag.tag_type if tag.tag_type in (ANALOG, DISCRETE) else 3
            with conn:
                conn.execute(
                    _INSERT,
                    {
                        "count": count,
                        "offset_ms": (number * 17) % interval_ms,
                        "interval_ms": interval_ms,
                        "salt": number * 104729 + seed,
                        "tag": tag.name,
                        "day": first_day.isoformat(),
                        "kind": kind,
                    },
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return Dataset(tuple(t.name for t in plant), count * len(plant))
