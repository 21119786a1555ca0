"""The `ww` command: status, simulate, backfill, doctor, init, config.

Exit codes: 0 done, 1 a command or a system failed (one line on stderr saying why), 2 a bad
argument or configuration value.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ww_assets.config import ConfigError, Settings, effective, redacted_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ww", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="what landed in ClickHouse")
    status.add_argument("--json", action="store_true",
                        help="print one JSON object (default: text)")
    status.add_argument("--serve", action="store_true",
                        help="serve the JSON document over HTTP at /consumption/wonderware_status "
                             "until Ctrl-C (default: print it once)")
    status.add_argument("--port", type=_number(int, 1, 65535), default=4000,
                        help="port for --serve (default 4000, the replaced system's)")
    status.add_argument("--host", default="127.0.0.1",
                        help="address for --serve (default 127.0.0.1: loopback only)")

    simulate = commands.add_parser("simulate", help="the emulator's plant")
    actions = simulate.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a plant with history up to now")
    create.add_argument("--days", type=_number(float, 0), default=3.0,
                        help="days of history (default 3)")
    create.add_argument("--tags", type=_number(int, 1), default=150,
                        help="number of tags (default 150)")
    create.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    extend = actions.add_parser("extend", help="append points up to now")
    extend.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    live = actions.add_parser("live", help="append points as time passes (Ctrl-C stops)")
    live.add_argument("--seconds", type=_number(float, 0), default=None,
                      help="stop after this long (default: run until Ctrl-C)")
    live.add_argument("--late-probability", type=_number(float, 0, 1), default=0.02,
                      help="chance per tick of a late store-and-forward burst (default 0.02)")
    serve = actions.add_parser(
        "serve",
        help="serve the plant over TDS as SQL Server does (login: WONDERWARE_USERNAME and "
             "WONDERWARE_PASSWORD; Ctrl-C stops)",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_number(int, 0, 65535), default=1433,
                       help="port to listen on (default 1433; 0 picks a free one)")
    more = actions.add_parser("add-tags", help="add tags with history")
    more.add_argument("count", type=_number(int, 1), help="how many tags to add")
    more.add_argument("--days", type=_number(float, 0), default=3.0,
                      help="days of history for them (default 3)")
    more.add_argument("--seed", type=int, default=11, help="random seed (default 11)")

    backfill = commands.add_parser(
        "backfill", help="materialize wonderware/tags, then wonderware/history through Dagster"
    )
    backfill.add_argument("--days", type=_number(int, 1), default=3,
                          help="complete UTC days before today (default 3)")
    backfill.add_argument("--no-sync", dest="sync", action="store_false",
                          help="skip the sync up to now that follows the backfill "
                               "(default: sync)")

    commands.add_parser("doctor", help="configuration and connectivity, one line per system")
    commands.add_parser(
        "init", help="create or migrate the warehouse's schema (the one step that needs DDL rights)"
    )
    commands.add_parser(
        "config", help="every configuration variable: effective value (secrets masked), source"
    )

    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's own usage, not the top-level one
        sub = commands.choices[args.command]
        if args.command == "simulate":
            sub = actions.choices[args.action]
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in ("status", "doctor", "init"):
        # clickhouse-driver logs every refused connection with its traceback; these commands
        # report the failure themselves, in one line (a backfill's runs keep the driver's log).
        logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"ww: configuration error: {error}", file=sys.stderr)
        return 2
    if args.command == "status" and args.serve:
        return _serve_status(settings, args)
    handler: Callable[[Settings, argparse.Namespace], int] = {
        "status": _status,
        "simulate": _simulate,
        "backfill": _backfill,
        "doctor": _doctor,
        "init": _init,
        "config": _config,
    }[args.command]
    return handler(settings, args)


def _number(
    kind: type[int] | type[float], minimum: float, maximum: float | None = None
) -> Callable[[str], float]:
    """An argparse `type`: a finite `kind` number in [minimum, maximum], else a usage error."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value

    return parse


def _warehouse_errors() -> tuple[type[BaseException], ...]:
    """What reaching or querying the warehouse raises when the system, not the code, fails."""
    from clickhouse_driver.errors import Error as ClickHouseDriverError

    from ww_assets.warehouse import WarehouseError

    return (WarehouseError, ClickHouseDriverError, OSError)


def _warehouse(settings: Settings):  # type: ignore[no-untyped-def]
    from ww_assets.wonderware.resources import initialized_resources

    return initialized_resources(settings)["warehouse"].warehouse()  # type: ignore[attr-defined]


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.status_report import status_report

    try:
        report = status_report(settings)
    except _warehouse_errors() as error:
        print(f"ww: status: {_warehouse(settings).describe()}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    if report["note"] and not report["total_data_points"]:
        print(report["note"])
        return 0
    print(f"warehouse:    {_warehouse(settings).describe()}")
    for key in ("total_tags", "total_data_points", "oldest_data", "newest_data",
                "data_span_days", "lag_seconds"):
        print(f"{key + ':':<20}{report[key]}")
    if report["lag_note"]:
        print(f"  {report['lag_note']}")
    print(f"{'chunk':<12}{'tags':>6}{'rows':>12}{'days':>6}  oldest → newest")
    for c in report["chunks"]:
        print(f"{c['chunk']:<12}{c['tags']:>6}{c['rows']:>12}{c['days']:>6}  {c['oldest']} → {c['newest']}")
    _print_checks(report["checks"])
    _print_load(report["historian_load"])
    return 0


def _print_load(load: dict[str, object]) -> None:
    from ww_assets.historian_meter import KINDS

    print(f"historian load, last {load['hours']} h (this machine): "
          f"{load['queries_per_minute']} queries per minute")
    for kind in KINDS:
        k: dict[str, object] = load[kind]  # type: ignore[assignment]
        print(f"  {kind:<8}{k['queries']:>8} queries{k['rows']:>14} rows{k['seconds']:>10} s")


def _serve_status(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.status_report import status_report
    from ww_assets.status_server import serve

    try:
        serve(lambda: status_report(settings), _warehouse_errors(), args.host, args.port)
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"ww: status --serve: {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


def _print_checks(checks: dict[str, object]) -> None:
    failing: dict[str, list[str]] = checks["partitions_failing"]  # type: ignore[assignment]
    print(f"checks:             {checks['partitions_verified']} of {checks['partitions_loaded']} "
          f"loaded partitions verified, {len(failing)} failing")
    for key, names in sorted(failing.items()):
        print(f"  failing {key}: {', '.join(names)}")
    unchecked: list[str] = checks["partitions_unchecked"]  # type: ignore[assignment]
    if unchecked:
        print(f"  not verified since their latest load: {', '.join(unchecked)}")
    warned: dict[str, list[str]] = checks["partitions_with_warnings"]  # type: ignore[assignment]
    by_check: dict[str, list[str]] = {}
    for key, names in sorted(warned.items()):
        for name in names:
            by_check.setdefault(name, []).append(key)
    for name, keys in sorted(by_check.items()):
        print(f"  warning {name} on {len(keys)} partitions: {', '.join(keys)}")


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.emulator import plant

    try:
        return _simulate_action(settings, args)
    except (plant.NoPlantError, OSError, sqlite3.Error) as error:  # FileExistsError included
        print(f"ww: simulate {args.action}: {error}", file=sys.stderr)
        return 1


def _simulate_action(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.emulator import plant

    path = settings.historian_sqlite
    now = datetime.now(timezone.utc)
    if args.action == "create":
        start = (now - timedelta(days=args.days)).replace(hour=0, minute=0, second=0, microsecond=0)
        summary = plant.create_plant(path, start, now, n_tags=args.tags, seed=args.seed)
        print(f"created {summary.tags} tags, {summary.points} points, "
              f"{summary.start:%Y-%m-%d %H:%M} → {summary.end:%Y-%m-%d %H:%M} UTC in {path}")
    elif args.action == "extend":
        added = plant.extend_plant(path, now, seed=args.seed)
        print(f"appended {added} points up to {now:%Y-%m-%d %H:%M:%S} UTC")
    elif args.action == "serve":
        return _serve(settings, args)
    elif args.action == "add-tags":
        plant.add_tags(path, args.count, now - timedelta(days=args.days), now, seed=args.seed)
        print(f"added {args.count} tags with {args.days} days of history")
    else:
        print(f"running live on {path}; Ctrl-C stops", flush=True)
        try:
            result = plant.run_live(path, stop_after_s=args.seconds,
                                    late_probability=args.late_probability)
        except KeyboardInterrupt:
            return 0
        print(f"live run ended: {result}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.emulator import plant, tds_server

    if not (settings.wonderware_username and settings.wonderware_password):
        print("ww: simulate serve: set WONDERWARE_USERNAME and WONDERWARE_PASSWORD: the SQL "
              "login the server admits (and the pipeline uses)", file=sys.stderr)
        return 2
    plant.require_plant(settings.historian_sqlite)

    def ready(address: tuple[str, int]) -> None:
        host, port = address
        print(f"serving {settings.historian_sqlite} as SQL Server on {host}:{port} "
              f"(database {tds_server.DATABASE}); point the pipeline at it with "
              f"WONDERWARE_HOST={host} WONDERWARE_PORT={port}; Ctrl-C stops", flush=True)

    try:
        tds_server.serve(
            settings.historian_sqlite, args.host, args.port,
            user=settings.wonderware_username, password=settings.wonderware_password,
            server_timezone=settings.emulator_timezone, ready=ready,
        )  # fmt: skip
    except KeyboardInterrupt:
        pass
    return 0


def _dagster_instance(settings: Settings):  # type: ignore[no-untyped-def]
    import dagster as dg

    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return dg.DagsterInstance.get()


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    """What a person does in the UI, from the command line: refresh the catalog, one range run
    over the last complete days × every tag chunk, then a sync up to now. Prints the runs'
    own log lines (partition progress, warnings), not Dagster's event stream."""
    import dagster as dg

    from ww_assets.definitions import build_definitions  # it silences Dagster's preview warnings
    from ww_assets.plant_days import with_plant_first_day
    from ww_assets.wonderware.keys import HISTORY_KEY, SYNC_KEY, TAGS_KEY
    from ww_assets.wonderware.partitions import TAG_CHUNKS, complete_days, history_key
    from ww_assets.wonderware.run_requests import range_tags

    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

    settings = with_plant_first_day(settings)  # the partitions the code location has
    defs = build_definitions(settings)
    instance = _dagster_instance(settings)
    job = defs.resolve_implicit_global_asset_job_def()

    def run(what: str, keys: list[dg.AssetKey], **kwargs: object) -> bool:
        result = job.execute_in_process(instance=instance, asset_selection=keys,
                                        run_config=quiet, raise_on_error=False, **kwargs)  # type: ignore[arg-type]
        if not result.success:
            print(f"ww: backfill: {what} failed: run {result.run_id} "
                  f"(`dagster run list`, or the UI's Runs page, has its log)", file=sys.stderr)
        return result.success

    print("refreshing the tag catalog (wonderware/tags)", flush=True)
    if not run("the tag catalog", [TAGS_KEY]):
        return 1
    chunks = instance.get_dynamic_partitions(TAG_CHUNKS.name)
    today = datetime.now(timezone.utc).date()
    span = complete_days(today, settings.backfill_oldest_time.date(), args.days)
    if not chunks or span is None:
        print("ww: backfill: nothing to backfill (no tag chunk, or no complete day since "
              f"{settings.backfill_oldest_time:%Y-%m-%d})", file=sys.stderr)
        return 1
    first, last = span
    days = (last - first).days + 1
    print(f"loading wonderware/history: {len(chunks)} chunks × {days} days "
          f"({first} → {last}) in one range run", flush=True)
    if not run("the history load", [HISTORY_KEY],
               tags=range_tags(history_key(chunks[0], first), history_key(chunks[-1], last))):
        return 1
    print(f"backfill succeeded: {len(chunks)} chunks × {days} days", flush=True)
    if not args.sync:
        return 0
    print("syncing up to now (wonderware/history_sync)", flush=True)
    if not run("the sync", [SYNC_KEY]):
        return 1
    print("sync succeeded: the data is current", flush=True)
    return 0


def _partitions_start(settings: Settings) -> str:
    """Where the history partitions start, and why (the emulated plant's first day is cheap
    to find; a real historian's oldest point is not, so its start is the configured one)."""
    from ww_assets.plant_days import with_plant_first_day

    start = f"history partitions from {with_plant_first_day(settings).backfill_oldest_time:%Y-%m-%d}"
    if settings.backfill_oldest_time_explicit or settings.wonderware_host:
        return f"{start} (WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME)"
    return f"{start} (the emulated plant's first day)"


def _init(settings: Settings, args: argparse.Namespace) -> int:
    """Create or migrate the warehouse's schema and record its version."""
    from ww_assets.history_store import SCHEMA_VERSION, init_schema

    warehouse = _warehouse(settings)
    try:
        with warehouse.connect() as conn:
            before = init_schema(conn, warehouse.database)
    except _warehouse_errors() as error:
        print(f"ww: init: {warehouse.describe()}: {error}", file=sys.stderr)
        return 1
    done = {None: "created", SCHEMA_VERSION: "already current"}.get(
        before, f"migrated from version {before}"
    )
    print(f"schema version {SCHEMA_VERSION} {done}: {warehouse.describe()}")
    return 0


def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from ww_assets.history_store import SCHEMA_VERSION, SchemaError, schema_problem, schema_version
    from ww_assets.warehouse import ChdbWarehouse
    from ww_assets.wonderware.resources import initialized_resources

    resources = initialized_resources(settings)
    checks: list[tuple[str, Callable[[], str]]] = []

    def historian() -> str:
        if not settings.wonderware_host and not settings.historian_sqlite.exists():
            from ww_assets.historian import EmulatorHistorian

            # says there is no plant, and how to make one, touching nothing in WW_HOME
            EmulatorHistorian(settings.historian_sqlite, settings.tag_types).ping()
        client = resources["historian"].client()  # type: ignore[attr-defined]
        client.ping()
        return f"{client.describe()}; {_partitions_start(settings)}"

    def warehouse() -> str:
        from ww_assets.status_report import START_HINT, nothing_stored

        # Reads only: the server's version (the first session checks it) and the schema's.
        store = _warehouse(settings)
        if nothing_stored(settings):  # chDB would create its store: say so instead
            return f"{store.describe()}: nothing stored yet; {START_HINT}"
        with store.connect() as conn:
            version = schema_version(conn, store.database)
        if version == SCHEMA_VERSION:
            return f"{store.describe()}, schema version {version}"
        if isinstance(store, ChdbWarehouse):  # created or migrated by its first use
            return f"{store.describe()}, {schema_problem(store.database, version)} (done on first use)"
        raise SchemaError(schema_problem(store.database, version))

    def cache() -> str:
        if not settings.redis_url:
            return "REDIS_URL unset: no tag cache (fine)"
        import redis

        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
        return f"Redis at {redacted_url(settings.redis_url)}"

    checks = [("config", lambda: f"WW_HOME={settings.home}"),
              ("historian", historian), ("warehouse", warehouse), ("cache", cache)]
    failed = 0
    for name, check in checks:
        try:
            print(f"{name:<10} ok    {check()}")
        except Exception as error:  # doctor reports every failure, whatever its kind
            failed += 1
            print(f"{name:<10} FAIL  {error}")
    return 1 if failed else 0


def _config(settings: Settings, args: argparse.Namespace) -> int:
    """One line per variable: name, `env` / `default` / `derived`, effective value."""
    from ww_assets.plant_days import with_plant_first_day

    rows = effective(os.environ, with_plant_first_day(settings))
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {source:<7}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

