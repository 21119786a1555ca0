"""The webserver's GraphQL endpoint, and the queries and mutations the UI sends through it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ww_assets_tests.services.processes import wait_for


@dataclass
class GraphQL:
    """The webserver's GraphQL endpoint, as the UI calls it."""

    url: str
    timeout_s: float = 60

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            self.url, json={"query": query, "variables": dict(variables or {})},
            timeout=self.timeout_s,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]


# ---------------------------------------------------------------- backfills

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions
      runs(limit: 100) { runId status }
    }
    ... on PythonError { message }
  }
}
"""

BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def launch_history_backfill(graphql: GraphQL, asset_path: list[str], first_key: str,
                            last_key: str, title: str) -> str:
    """What the UI's backfill launcher sends for a range of partitions of one asset."""
    result = graphql(LAUNCH_BACKFILL, {
        "params": {
            "partitionsByAssets": [{
                "assetKey": {"path": asset_path},
                "partitions": {"ranges": [{"start": first_key, "end": last_key}]},
            }],
            "title": title,
        }
    })["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def wait_backfill(graphql: GraphQL, backfill_id: str, timeout_s: float,
                  alive: Callable[[], None] | None = None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        backfill = graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return backfill if backfill["status"] in BACKFILL_DONE else None

    return wait_for(f"backfill {backfill_id}", done, timeout_s=timeout_s, interval_s=1,
                    alive=alive)


# ---------------------------------------------------------------- what the UI shows

ASSET_PAGE = """
query AssetPage($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      partitionStats { numMaterialized numMaterializing numFailed numPartitions }
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks { name blocking partitionDefinition { type } }
        }
      }
    }
  }
}
"""

CHECK_EXECUTIONS = """
query CheckExecutions($path: [String!]!, $name: String!, $partition: String) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $name, partition: $partition,
                       limit: 1) {
    runId status partition
    evaluation { success partition description severity }
  }
}
"""

PARTITION_MATERIALIZATIONS = """
query Materializations($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { id status } }
  }
}
"""

STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""

REPOSITORIES = """
query Repositories {
  repositoriesOrError {
    ... on RepositoryConnection { nodes { name location { name } } }
  }
}
"""

ACTIVE_RUN_STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


def partition_stats(graphql: GraphQL, path: list[str]) -> dict[str, int]:
    node = graphql(ASSET_PAGE, {"path": path})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    return node["partitionStats"]


def check_names(graphql: GraphQL, path: list[str]) -> dict[str, bool]:
    """The asset's checks as the asset page lists them: name → partitioned."""
    node = graphql(ASSET_PAGE, {"path": path})["assetNodeOrError"]
    checks = node["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    return {c["name"]: c["partitionDefinition"] is not None for c in checks["checks"]}


def partition_check_results(graphql: GraphQL, path: list[str], names: list[str],
                            keys: list[str]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The latest execution of each check on each partition key (None: never evaluated)."""
    results: dict[tuple[str, str], dict[str, Any] | None] = {}
    for name in names:
        for key in keys:
            latest = graphql(CHECK_EXECUTIONS,
                             {"path": path, "name": name, "partition": key})["assetCheckExecutions"]
            results[(name, key)] = latest[0] if latest else None
    return results


def partition_materializations(graphql: GraphQL, path: list[str], key: str) -> list[str]:
    """Run ids of the materializations of one partition."""
    asset = graphql(PARTITION_MATERIALIZATIONS, {"path": path, "partitions": [key]})["assetOrError"]
    assert asset["__typename"] == "Asset", asset
    return [m["runId"] for m in asset["assetMaterializations"] if m["partition"] == key]


def runs(graphql: GraphQL, tags: Mapping[str, str] | None = None,
         statuses: list[str] | None = None) -> list[dict[str, Any]]:
    run_filter: dict[str, Any] = {}
    if tags:
        run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    if statuses:
        run_filter["statuses"] = statuses
    result = graphql(RUNS, {"filter": run_filter})["runsOrError"]
    assert result["__typename"] == "Runs", result
    return result["results"]


def stop_sensor(graphql: GraphQL, name: str) -> None:
    """The sensor's toggle in the UI."""
    repos = graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    assert len(repos) == 1, repos
    selector = {"repositoryLocationName": repos[0]["location"]["name"],
                "repositoryName": repos[0]["name"], "sensorName": name}
    sensor = graphql(SENSOR, {"selector": selector})["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    stopped = graphql(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped
    assert stopped["instigationState"]["status"] == "STOPPED"


def wait_no_active_runs(graphql: GraphQL, timeout_s: float,
                        alive: Callable[[], None] | None = None) -> None:
    wait_for("queued and running runs to finish",
             lambda: not runs(graphql, statuses=ACTIVE_RUN_STATUSES),
             timeout_s=timeout_s, interval_s=1, alive=alive)


