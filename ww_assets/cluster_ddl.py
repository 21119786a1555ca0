"""ClickHouse cluster mode: the project's tables as `ON CLUSTER` DDL.

With `CLICKHOUSE_CLUSTER` set, every table of `history_store.create_schema` (the rollup's
included) becomes two:

- `<Table>_local` on every node: the same columns, ordering, partitioning and settings, with
  the engine's `Replicated` variant (`ReplacingMergeTree(LoadId, IsDeleted)` →
  `ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/<db>/<Table>_local', '{replica}',
  LoadId, IsDeleted)`), so each shard's replicas hold the same parts;
- `<Table>`: a `Distributed` table over the locals, sharded by `cityHash64(TagName)` (the load
  register and the schema version, without a tag, by `UNTAGGED_SHARDING`). Inserts keep the
  table names they use on one server. All versions of a point live on one shard, so the
  readers' views (`WonderwareHistory`, `WonderwareHistoryAggregated`, created on every node
  over the Distributed tables) see one row per point: `FINAL` runs on each shard's local table.

The statements are derived from what those functions issue (captured, not copied), so a column
added there reaches the cluster DDL without an edit here. No Dagster import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ww_assets.history_store import create_schema

CLUSTER_ENV = "CLICKHOUSE_CLUSTER"
LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(TagName)"
UNTAGGED_SHARDING = {"WonderwareLoads": "cityHash64(LoadId)", "WonderwareSchema": "cityHash64(Version)"}
"""The sharding keys of the tables without a tag."""
# The usual macros of a ClickHouse cluster's config (`<macros>`): each node fills in its own.
ZOOKEEPER_PATH = "/clickhouse/tables/{shard}/%(database)s/%(table)s"
REPLICA_NAME = "{replica}"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_DATABASE = re.compile(r"^CREATE DATABASE IF NOT EXISTS (?P<db>\w+)$")
_CREATE_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (?P<db>\w+)\.(?P<view>\w+) (?P<rest>AS .*)$", re.DOTALL)
_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<table>\w+) (?P<columns>\(.*\))\s*"
    r"ENGINE = (?P<engine>\w*MergeTree)\((?P<args>[^)]*)\)(?P<rest>.*)$",
    re.DOTALL,
)


class ClusterConfigError(ValueError):
    """CLICKHOUSE_CLUSTER is not a valid cluster name; the message names the variable."""


def cluster_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster named by CLICKHOUSE_CLUSTER, or None (single server or chDB)."""
    value = (environ if environ is not None else os.environ).get(CLUSTER_ENV, "").strip()
    if not value:
        return None
    if not _IDENTIFIER.match(value):
        raise ClusterConfigError(
            f"{CLUSTER_ENV}={value!r}: a cluster name from the server's remote_servers "
            "(letters, digits, underscores)"
        )
    return value


def local_table(table: str) -> str:
    return f"{table}{LOCAL_SUFFIX}"


def mutation_target(database: str, table: str, cluster: str | None) -> str:
    """Where an `OPTIMIZE` or `ALTER` by hand goes: they do not work on a Distributed table, so
    in cluster mode they run on every node's local table (the pipeline sends neither)."""
    if cluster is None:
        return f"{database}.{table}"
    return f"{database}.{local_table(table)} ON CLUSTER {cluster}"


@dataclass
class _Recorder:
    """A warehouse connection that only records the DDL it is given."""

    statements: list[str] = field(default_factory=list)

    def command(self, sql: str, params: object = None) -> None:
        self.statements.append(sql.strip())

    def query(self, sql: str, params: object = None) -> object:
        import pyarrow as pa

        # create_schema asks which tables exist (to move an older layout): none, on a cluster
        # that is being created.
        return pa.table({"engine": pa.array([], pa.string())})

    def insert(self, table: str, data: object) -> None:
        raise AssertionError("create_schema is expected to issue DDL only")


def single_server_ddl(database: str) -> list[str]:
    """The statements `history_store.create_schema` issues on one server, each once."""
    recorder = _Recorder()
    create_schema(recorder, database)  # type: ignore[arg-type]
    return list(dict.fromkeys(recorder.statements))


def render_cluster_ddl(database: str, cluster: str) -> list[str]:
    """`ON CLUSTER` DDL: the database, then for each table its replicated local table and the
    Distributed table over it. Idempotent (`IF NOT EXISTS`), like `create_schema`."""
    for name, value in (("CLICKHOUSE_DB", database), (CLUSTER_ENV, cluster)):
        if not _IDENTIFIER.match(value):
            raise ClusterConfigError(f"{name}={value!r} is not an identifier")
    rendered: list[str] = []
    for statement in single_server_ddl(database):
        if match := _CREATE_DATABASE.match(statement):
            rendered.append(f"CREATE DATABASE IF NOT EXISTS {match['db']} ON CLUSTER {cluster}")
            continue
        if match := _CREATE_VIEW.match(statement):
            # Over the Distributed table: FINAL runs on every shard's local table, and all
            # versions of a point are on one shard (sharded by tag).
            rendered.append(f"CREATE VIEW IF NOT EXISTS {match['db']}.{match['view']} "
                            f"ON CLUSTER {cluster} {match['rest']}")  # fmt: skip
            continue
        match = _CREATE_TABLE.match(statement)
        if match is None:
            raise ClusterConfigError(
                f"no cluster form for this create_schema statement:\n{statement}"
            )
        db, table, local = match["db"], match["table"], local_table(match["table"])
        path = ZOOKEEPER_PATH % {"database": db, "table": local}
        args = ", ".join(a for a in (f"'{path}'", f"'{REPLICA_NAME}'", match["args"].strip()) if a)
        rendered.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster} {match['columns']}\n"
            f"ENGINE = Replicated{match['engine']}({args}){match['rest']}"
        )
        rendered.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{local}\n"
            f"ENGINE = Distributed({cluster}, {db}, {local}, "
            f"{UNTAGGED_SHARDING.get(table, SHARDING_KEY)})"
        )
    return rendered


def ensure_cluster_schema(conn: object, database: str, cluster: str) -> None:
    """Run the cluster DDL on a server connection (any node of the cluster)."""
    for statement in render_cluster_ddl(database, cluster):
        conn.command(statement)  # type: ignore[attr-defined]


if __name__ == "__main__":
    # `python -m ww_assets.cluster_ddl`: print the DDL for review or for a migration tool.
    env_cluster = cluster_from_env() or "ww_cluster"
    for sql in render_cluster_ddl(os.environ.get("CLICKHOUSE_DB", "wonderware"), env_cluster):
        print(sql + ";\n")
