"""An embedded AVEVA Historian emulator: SQLite storage, History query semantics, a simulated plant.

No Dagster import: used by the resources, the CLI and the tests alike.
"""

from ww_assets.emulator.history import HistorianEmulator
from ww_assets.emulator.store import (
    TagDef,
    add_points,
    add_tags,
    connect,
    format_utc,
    parse_utc,
)

__all__ = [
    "HistorianEmulator",
    "TagDef",
    "add_points",
    "add_tags",
    "connect",
    "format_utc",
    "parse_utc",
]
