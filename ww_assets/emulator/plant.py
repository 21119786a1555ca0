"""A simulated plant for the emulator: tags, history, and a live feed (`ww simulate`).

Every tag changes at its own pace (between 7 s and 10 min between stored points, log-uniform,
jittered ±50 % and millisecond-accurate), with occasional bad-quality NULL points, gaps (comms
lost for 10 min to 2 h, announced by a bad point), doubtful points (Quality 16 / OPC 64), analog
values on a random walk inside [MinEU, MaxEU] with rare excursions outside, discrete 0/1 and
string tags with many repeated values (so `Delta` and `Full` differ). Everything is
deterministic for a seed, except what `run_live` does with the wall clock.
"""

from __future__ import annotations

import hashlib
import math
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import count
from pathlib import Path

from ww_assets.emulator import store
from ww_assets.emulator.store import TagDef
from ww_assets.history_query import naive_utc

ANALOG, DISCRETE, STRING = store.ANALOG, store.DISCRETE, store.STRING

MIN_INTERVAL_S = 7.0
MAX_INTERVAL_S = 600.0
"""Bounds of a tag's mean time between stored points; log-uniform in between."""

GOOD = (0, 192, 192)
DOUBTFUL = (16, 64, 64)
BAD = (1, 0, 0)
"""(Quality, QualityDetail, OpcQuality) of good, doubtful and bad points."""

GAP_PROBABILITY = 0.0008
BAD_PROBABILITY = 0.0015
DOUBTFUL_PROBABILITY = 0.003
OUTLIER_PROBABILITY = 0.0005
HOLD_PROBABILITY = 0.05
DISCRETE_CHANGE_PROBABILITY = 0.3
STRING_CHANGE_PROBABILITY = 0.25
GAP_MINUTES = (10.0, 120.0)

AWKWARD_TAGS: tuple[TagDef, ...] = (
    TagDef("Operator's.Note", STRING, "Free text note with a quote in the name"),
    TagDef("Line2;Speed", ANALOG, "Semicolon in the name", 0.0, 120.0, "m/min"),
    TagDef("Pump--3.Flow", ANALOG, "SQL comment marker in the name", 0.0, 500.0, "m3/h"),
    TagDef("Tank 4 Level", ANALOG, "Spaces in the name", 0.0, 100.0, "%"),
    TagDef("Area1.Boiler.Drum.Pressure", ANALOG, "Many dots in the name", 0.0, 60.0, "bar"),
    TagDef("Kühlwasser.Temperatur", ANALOG, "Kühlwasser Vorlauftemperatur", 5.0, 45.0, "°C"),
    TagDef("Température_ÉCHANGEUR", ANALOG, "Température sortie échangeur", 0.0, 250.0, "°C"),
    TagDef("Mixer 2.Motor.Running", DISCRETE, "Spaces and dots, discrete"),
    TagDef("System2.Flow", ANALOG, "A plant tag whose name starts with System", 0.0, 80.0, "m3/h"),
)
"""Names that break naive SQL and encodings; always part of `default_tags`."""

SYSTEM_TAGS: tuple[TagDef, ...] = (
    TagDef("SysTimeSec", ANALOG, "Historian system time: seconds", 0.0, 59.0, "s",
           store.SYSTEM_DRIVER),
    TagDef("SysPerfCPUTotal", ANALOG, "Historian CPU load", 0.0, 100.0, "%", store.SYSTEM_DRIVER),
)
"""Historian system tags, acquired by the system driver: stored like any tag, never copied."""

_AREAS = (
    "Reactor", "Boiler", "Compressor", "Pump", "Tank", "Line", "Dryer", "Mixer", "Kiln",
    "Separator", "Chiller", "Conveyor",
)  # fmt: skip
_ANALOG_ATTRIBUTES = (
    ("Temperature", "°C", 0.0, 400.0),
    ("Pressure", "bar", 0.0, 25.0),
    ("Flow", "m3/h", 0.0, 500.0),
    ("Level", "%", 0.0, 100.0),
    ("Speed", "rpm", 0.0, 3000.0),
    ("Current", "A", 0.0, 200.0),
    ("Vibration", "mm/s", 0.0, 20.0),
    ("pH", "pH", 0.0, 14.0),
    ("Power", "kW", 0.0, 1500.0),
    ("Density", "kg/m3", 800.0, 1200.0),
)
_DISCRETE_ATTRIBUTES = ("Running", "Alarm", "ValveOpen", "Interlock", "AutoMode", "Fault")
_STRING_ATTRIBUTES = ("BatchID", "State", "Recipe", "Operator")
# Per area: 7 analog, 2 discrete, 1 string tags, i.e. the 70/20/10 mix.
_PER_AREA = (7, 2, 1)

_VOCABULARIES = {
    "BatchID": tuple(f"B2025-{n:04d}" for n in range(1, 13)),
    "State": ("Idle", "Starting", "Running", "Stopping", "Cleaning", "Fault"),
    "Recipe": ("Recipe A", "Recipe B", "Recipe C - low temp", "Rezept Ü"),
    "Operator": ("Ana", "Jörg", "O'Brien", "Zoë", "Li Wei"),
    "Note": ("OK", "checked valve", "sampled; pH ok", 'recheck "B" side', "", "--"),
}
_DEFAULT_VOCABULARY = ("Off", "On", "Unknown")

_EPOCH = datetime(1970, 1, 1)


class NoPlantError(ValueError):
    """There is no plant at a path to grow or run: the file is missing or holds no tags."""


@dataclass(frozen=True)
class PlantSummary:
    """What a plant operation wrote: tag count, point count, and the UTC window it covered."""

    tags: int
    points: int
    start: datetime
    end: datetime
    tag_names: tuple[str, ...] = ()


@dataclass
class LiveStats:
    """What `run_live` appended."""

    ticks: int = 0
    points: int = 0
    late_bursts: int = 0
    late_points: int = 0
    per_tick: list[int] = field(default_factory=list, repr=False)


def default_tags(n_tags: int = 150, seed: int = 7) -> list[TagDef]:
    """`n_tags` plant tags (about 70 % analog, 20 % discrete, 10 % string) plus `SYSTEM_TAGS`.

    The `AWKWARD_TAGS` come first (the first `n_tags` of them when `n_tags` is smaller); the
    rest are named like `Reactor01.Temperature`. System tags are not counted in `n_tags`.
    """
    if n_tags < 0:
        raise ValueError(f"n_tags must not be negative, got {n_tags}")
    tags = list(AWKWARD_TAGS[:n_tags])
    names = {t.name for t in tags}
    for tag in _plant_tags(seed):
        if len(tags) >= n_tags:
            break
        if tag.name not in names:
            tags.append(tag)
            names.add(tag.name)
    return tags + list(SYSTEM_TAGS)


def _plant_tags(seed: int) -> Iterator[TagDef]:
    """An endless sequence of plant-like tags, area by area."""
    rng = random.Random(seed)
    for number in count(1):
        area = _AREAS[(number - 1) % len(_AREAS)]
        prefix = f"{area}{number:02d}"
        n_analog, n_discrete, n_string = _PER_AREA
        for attribute, unit, low, high in rng.sample(_ANALOG_ATTRIBUTES, n_analog):
            yield TagDef(f"{prefix}.{attribute}", ANALOG, f"{area} {number} {attribute.lower()}",
                         low, high, unit)  # fmt: skip
        for attribute in rng.sample(_DISCRETE_ATTRIBUTES, n_discrete):
            yield TagDef(f"{prefix}.{attribute}", DISCRETE, f"{area} {number} {attribute}")
        for attribute in rng.sample(_STRING_ATTRIBUTES, n_string):
            yield TagDef(f"{prefix}.{attribute}", STRING, f"{area} {number} {attribute}")


def create_plant(
    path: str | Path,
    start_utc: datetime,
    end_utc: datetime,
    n_tags: int = 150,
    seed: int = 7,
) -> PlantSummary:
    """Create a store at `path` with `default_tags(n_tags, seed)` and their history in [start, end).

    With the defaults (150 tags) three days are about 1 million points, written in a few
    seconds. Bounds are aware datetimes or naive ones meaning UTC. Raises `FileExistsError` if
    the store already holds tags: `extend_plant` / `add_tags` grow an existing plant.
    """
    start_ms, end_ms = _window_ms(start_utc, end_utc)
    conn = store.connect(path)
    try:
        existing = conn.execute("SELECT count(*) FROM TagRef").fetchone()[0]
        if existing:
            raise FileExistsError(
                f"{path} already holds a plant ({existing} tags): grow it with "
                "`ww simulate extend` or `ww simulate add-tags`, or delete the file to start over"
            )
        tags = default_tags(n_tags, seed)
        points = _write_history(conn, tags, start_ms, end_ms, seed)
    finally:
        conn.close()
    return PlantSummary(
        len(tags), points, _utc(start_ms), _utc(end_ms), tuple(t.name for t in tags)
    )


def add_tags(
    path: str | Path, n: int, start_utc: datetime, end_utc: datetime, seed: int = 11
) -> PlantSummary:
    """Add `n` new plant tags to the store at `path`, with history in [start, end).

    New names never collide with existing tags. Returns the new tags and their point count.
    Raises `NoPlantError` when there is no plant at `path`.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    start_ms, end_ms = _window_ms(start_utc, end_utc)
    conn = _open_plant(path)
    try:
        existing = {row[0] for row in conn.execute("SELECT TagName FROM TagRef")}
        tags: list[TagDef] = []
        for tag in _plant_tags(seed):
            if len(tags) >= n:
                break
            if tag.name not in existing:
                tags.append(tag)
                existing.add(tag.name)
        points = _write_history(conn, tags, start_ms, end_ms, seed)
    finally:
        conn.close()
    return PlantSummary(
        len(tags), points, _utc(start_ms), _utc(end_ms), tuple(t.name for t in tags)
    )


def extend_plant(path: str | Path, end_utc: datetime, seed: int = 7) -> int:
    """Append points to every tag from its last stored point up to `end_utc` (exclusive).

    Each tag continues its pattern: its pace (from its recent points), its last value, its
    range. Tags without any stored point are left alone. Returns the number of points added.
    Raises `NoPlantError` when there is no plant at `path`.
    """
    end_ms = _ms(end_utc)
    conn = _open_plant(path)
    try:
        walkers = _resume_walkers(conn, seed, salt="extend")
        return store.add_point_texts(
            conn, (row for walker in walkers for row in walker.take_until(end_ms))
        )
    finally:
        conn.close()


def run_live(
    path: str | Path,
    stop_after_s: float | None,
    tick_s: float = 1.0,
    late_probability: float = 0.02,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    seed: int = 7,
) -> LiveStats:
    """Append points as (`clock`) time passes, every `tick_s`, until `stop_after_s` elapsed.

    The first tick catches every tag up to now. With `late_probability` per tick, one tag
    gets a store-and-forward burst: points 1 to 15 minutes in the past, inserted now.
    `stop_after_s=None` runs until interrupted; `0` makes exactly one tick. Prints nothing.
    Raises `NoPlantError` when there is no plant at `path`, or it has no history yet.
    """
    if tick_s <= 0:
        raise ValueError(f"tick_s must be positive, got {tick_s}")
    conn = _open_plant(path)
    stats = LiveStats()
    try:
        walkers = _resume_walkers(conn, seed, salt="live")
        if not walkers:
            raise NoPlantError(
                f"{path} holds no plant history: create a plant first (`ww simulate create`)"
            )
        started = clock()
        rng = random.Random(f"{seed}:{started}")
        while True:
            tick_started = clock()
            now_ms = int(tick_started * 1000)
            written = store.add_point_texts(
                conn, (row for walker in walkers for row in walker.take_until(now_ms + 1))
            )
            stats.points += written
            stats.per_tick.append(written)
            if rng.random() < late_probability:
                stats.late_bursts += 1
                stats.late_points += store.add_point_texts(
                    conn, _late_burst(rng.choice(walkers), rng, now_ms)
                )
            stats.ticks += 1
            elapsed = clock() - started
            if stop_after_s is not None and elapsed >= stop_after_s:
                return stats
            wait = tick_s - (clock() - tick_started)
            if stop_after_s is not None:
                wait = min(wait, stop_after_s - elapsed)
            sleep(max(wait, 0.0))
    finally:
        conn.close()


def require_plant(path: str | Path) -> None:
    """Raise `NoPlantError` unless `path` holds a plant with tags."""
    _open_plant(path).close()


def _open_plant(path: str | Path) -> sqlite3.Connection:
    """A connection to the plant at `path`; unlike `store.connect`, never creates a store:
    an empty one would look like a plant without tags to everything that reads it."""
    if not Path(path).is_file():
        raise NoPlantError(
            f"no emulated plant at {path}: create a plant first (`ww simulate create`)"
        )
    conn = store.connect(path)
    try:
        if conn.execute("SELECT 1 FROM TagRef LIMIT 1").fetchone() is None:
            raise NoPlantError(
                f"no emulated plant at {path} (it holds no tags): create a plant first "
                "(`ww simulate create`)"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _late_burst(walker: _Walker, rng: random.Random, now_ms: int) -> Iterator[tuple]:
    """Points of `walker`'s tag between 15 and 1 minutes ago, as a store-and-forward would send."""
    start_ms = now_ms - int(rng.uniform(2.0, 15.0) * 60_000)
    burst = _Walker(
        walker.model,
        random.Random(rng.random()),
        start_ms + rng.randrange(1, 1000),
        walker.value,
    )
    # A forwarding I/O server sends what it buffered: no gaps in it.
    burst.gaps = False
    return burst.take_until(now_ms - 60_000)


@dataclass(frozen=True)
class _Model:
    name: str
    tag_type: int
    interval_ms: float
    low: float
    high: float
    vocabulary: tuple[str, ...]


class _Walker:
    """One tag's point generator: emits its next point until a given time."""

    def __init__(self, model: _Model, rng: random.Random, next_ms: int, value: object) -> None:
        self.model = model
        self.rng = rng
        self.next_ms = next_ms
        self.value = value
        self.gaps = True

    def take_until(self, end_ms: int) -> Iterator[tuple]:
        """Stored-point rows (`format_utc` DateTime text) from `next_ms` up to `end_ms`."""
        model, rng = self.model, self.rng
        name, tag_type, interval = model.name, model.tag_type, model.interval_ms
        span = model.high - model.low
        value = self.value
        while self.next_ms < end_ms:
            moment = _text(self.next_ms)
            draw = rng.random()
            step = max(1, round(interval * (0.5 + rng.random())))
            if draw < BAD_PROBABILITY + GAP_PROBABILITY:
                yield (name, moment, None, None, *BAD)
                if draw < GAP_PROBABILITY and self.gaps:
                    step += round(rng.uniform(*GAP_MINUTES) * 60_000)
                self.next_ms += step
                continue
            quality = DOUBTFUL if rng.random() < DOUBTFUL_PROBABILITY else GOOD
            if tag_type == STRING:
                if rng.random() < STRING_CHANGE_PROBABILITY:
                    value = rng.choice(model.vocabulary)
                yield (name, moment, None, value, *quality)
            elif tag_type == DISCRETE:
                if rng.random() < DISCRETE_CHANGE_PROBABILITY:
                    value = 1.0 - value
                yield (name, moment, value, "1" if value else "0", *quality)
            else:
                if rng.random() >= HOLD_PROBABILITY:
                    value = _reflect(value + rng.gauss(0.0, span * 0.02), model.low, model.high)
                stored = value
                if rng.random() < OUTLIER_PROBABILITY:
                    stored = model.high + span * rng.uniform(0.01, 0.2)
                stored = round(stored, 3)
                yield (name, moment, stored, f"{stored:.15g}", *quality)
            self.next_ms += step
        self.value = value


def _reflect(value: float, low: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return low
    offset = math.fmod(value - low, 2 * span)
    if offset < 0:
        offset += 2 * span
    return low + (offset if offset <= span else 2 * span - offset)


def _write_history(
    conn: sqlite3.Connection, tags: list[TagDef], start_ms: int, end_ms: int, seed: int
) -> int:
    store.add_tags(conn, tags)
    walkers = []
    for tag in tags:
        model = _model(tag, seed, None)
        rng = _rng(seed, tag.name, "create", start_ms)
        first = start_ms + rng.randrange(0, max(1, int(model.interval_ms)))
        walkers.append(_Walker(model, rng, first, _initial_value(model, rng)))
    return store.add_point_texts(
        conn, (row for walker in walkers for row in walker.take_until(end_ms))
    )


def _resume_walkers(conn: sqlite3.Connection, seed: int, salt: str) -> list[_Walker]:
    """A walker per tag with stored points, continuing after its last point."""
    walkers = []
    for tag in store.tag_definitions(conn):
        name, tag_type = tag.name, tag.tag_type
        recent = conn.execute(
            "SELECT DateTime, Value, VValue FROM Points WHERE TagName = ? "
            "ORDER BY DateTime DESC LIMIT 21",
            (name,),
        ).fetchall()
        if not recent:
            continue
        times = [_ms(datetime.fromisoformat(row[0])) for row in recent]
        model = _model(tag, seed, times)
        rng = _rng(seed, name, salt, times[0])
        value_index = 2 if tag_type == STRING else 1
        values = [row[value_index] for row in recent if row[value_index] is not None]
        value = values[0] if values else _initial_value(model, rng)
        if tag_type == DISCRETE:
            value = 1.0 if value else 0.0
        step = max(1, round(model.interval_ms * rng.uniform(0.5, 1.5)))
        walkers.append(_Walker(model, rng, times[0] + step, value))
    return walkers


def _model(tag: TagDef, seed: int, recent_ms: list[int] | None) -> _Model:
    """How `tag` behaves; its pace comes from its recent points (newest first) when known."""
    rng = _rng(seed, tag.name, "model")
    interval_ms = math.exp(rng.uniform(math.log(MIN_INTERVAL_S), math.log(MAX_INTERVAL_S))) * 1000
    if recent_ms and len(recent_ms) >= 3:
        # The median step ignores gaps, so the tag keeps the pace it had.
        steps = [a - b for a, b in zip(recent_ms, recent_ms[1:], strict=False)]
        interval_ms = min(max(statistics.median(steps), 1000.0), MAX_INTERVAL_S * 1000)
    if tag.tag_type == DISCRETE:
        low, high = 0.0, 1.0
    else:
        low = tag.min_eu if tag.min_eu is not None else 0.0
        high = tag.max_eu if tag.max_eu is not None else 100.0
    attribute = tag.name.rsplit(".", 1)[-1]
    vocabulary = _VOCABULARIES.get(attribute, _DEFAULT_VOCABULARY)
    return _Model(tag.name, tag.tag_type, interval_ms, low, high, vocabulary)


def _initial_value(model: _Model, rng: random.Random) -> object:
    if model.tag_type == STRING:
        return rng.choice(model.vocabulary)
    if model.tag_type == DISCRETE:
        return float(rng.randrange(2))
    span = model.high - model.low
    return model.low + span * rng.uniform(0.2, 0.8)


def _rng(seed: int, name: str, *salt: object) -> random.Random:
    # hashlib, not hash(): str hashes are salted per process and would break determinism.
    key = "\x00".join([str(seed), name, *map(str, salt)])
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _ms(moment: datetime) -> int:
    naive = naive_utc(moment)
    delta = naive - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _window_ms(start_utc: datetime, end_utc: datetime) -> tuple[int, int]:
    start_ms, end_ms = _ms(start_utc), _ms(end_utc)
    if end_ms < start_ms:
        raise ValueError(f"end {end_utc} is before start {start_utc}")
    return start_ms, end_ms


def _utc(ms: int) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).replace(tzinfo=timezone.utc)


def _text(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(sep=" ", timespec="milliseconds")
