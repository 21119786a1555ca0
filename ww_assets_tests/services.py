"""Real services for end-to-end tests: dagster-webserver, dagster-daemon, PostgreSQL.

Every service runs in its own process group on a free port, logs to a file under the test's
tmp_path (printed when a wait times out, so a failure says why), and stops the way an operator
stops it: SIGINT first (Ctrl-C, which lets Dagster shut its code servers down), the whole
group killed only if that does not finish within the deadline.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import requests

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets.history_store import chunk_tags
from ww_assets.warehouse import ChdbWarehouse
from ww_assets.wonderware.assets import HISTORY_KEY, TAGS_KEY
from ww_assets_tests.conftest import REPO, free_port
from ww_assets_tests.plant_fixtures import stored_points, warehouse_points

BIN = Path(sys.executable).parent

T = TypeVar("T")

# Variables a developer's shell may carry that would point the services at real systems.
_ISOLATED = (
    "WONDERWARE_HOST",
    "CLICKHOUSE_HOST",
    "CLICKHOUSE_CLUSTER",
    "REDIS_URL",
    "DAGSTER_HOME",
)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline.

    `alive` raises when a service the wait depends on has died, so a crash fails at once
    instead of at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        if alive:
            alive()
        try:
            value = probe()
            if value:
                return value
        except (requests.RequestException, OSError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval_s)


def service_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The current environment without anything pointing at real systems, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATED}
    env.update(overrides)
    return env


def dagster_home(path: Path, config: Path) -> Path:
    """A fresh DAGSTER_HOME holding a copy of `config` as its dagster.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, path / "dagster.yaml")
    return path


# ---------------------------------------------------------------- processes


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{self.tail()}"
            )

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60) -> int:
        """Ctrl-C, wait, then kill the whole group if needed. Returns the exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        return self.process.returncode

    def group_alive(self) -> bool:
        """Whether any process of the service's group (code servers, run workers) is left."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def group_leftovers(self) -> list[str]:
        """Command lines of the processes still in the service's group."""
        left = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                # pgrp is the 3rd field after the parenthesised command name
                pgrp = int(stat.rsplit(")", 1)[1].split()[2])
                if pgrp == self.process.pid:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    left.append(f"{proc.name}: {cmd.strip()}")
            except (OSError, ValueError, IndexError):
                continue
        return left

    def wait_group_gone(self, timeout_s: float = 60) -> list[str]:
        """Waits for the group's children (code servers shut down after their parent) to exit;
        returns what is still there at the deadline."""
        deadline = time.monotonic() + timeout_s
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.group_leftovers() if self.group_alive() else []

    def kill_group(self) -> None:
        if self.group_alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path,
          cwd: Path = REPO) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    return Service(name, process, log)


# ---------------------------------------------------------------- GraphQL


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


LOCATIONS_QUERY = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

DAEMONS_QUERY = """
query Daemons {
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


@dataclass
class Webserver:
    service: Service
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql(self) -> GraphQL:
        return GraphQL(f"{self.base_url}/graphql")

    def wait_loaded(self, timeout_s: float = 120) -> None:
        """Until the webserver answers and the code location loaded without error."""

        def loaded() -> bool:
            data = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]
            entries = data.get("locationEntries") or []
            for entry in entries:
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise AssertionError(f"code location {entry['name']} failed: {error['message']}")
            return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

        wait_for("the webserver to load the code location", loaded, timeout_s=timeout_s,
                 alive=self.service.check_alive)

    def wait_daemons_healthy(self, daemon: Service, timeout_s: float = 120) -> None:
        def healthy() -> bool:
            statuses = self.graphql(DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
            required = [s for s in statuses if s["required"]]
            return bool(required) and all(s["healthy"] for s in required)

        def both_alive() -> None:
            self.service.check_alive()
            daemon.check_alive()

        wait_for("the daemon's heartbeats", healthy, timeout_s=timeout_s, alive=both_alive)


WORKSPACE = REPO / "workspace.yaml"


def start_webserver(env: Mapping[str, str], log_dir: Path, workspace: Path = WORKSPACE) -> Webserver:
    port = free_port()
    service = start(
        "webserver",
        [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1",
         "-p", str(port)],
        env, log_dir, cwd=workspace.parent,
    )
    return Webserver(service, port)


def start_daemon(env: Mapping[str, str], log_dir: Path, workspace: Path = WORKSPACE) -> Service:
    return start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                 env, log_dir, cwd=workspace.parent)


@dataclass
class DagsterServices:
    """The webserver, and the daemon once `start_daemon` is called."""

    webserver: Webserver
    env: Mapping[str, str]
    log_dir: Path
    workspace: Path
    daemon: Service | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)

    def start_daemon(self) -> Service:
        """Starts dagster-daemon and waits for its heartbeats. Launching a backfill before
        this makes the daemon's first backfill iteration pick it up, instead of up to 30 s
        later (the backfill daemon's fixed interval in 1.13)."""
        if self.daemon is None:
            self.daemon = start_daemon(self.env, self.log_dir, self.workspace)
            self.webserver.wait_daemons_healthy(self.daemon)
        return self.daemon

    def check_alive(self) -> None:
        self.webserver.service.check_alive()
        if self.daemon is not None:
            self.daemon.check_alive()

    def services(self) -> list[Service]:
        """Daemon first (no new runs), then the webserver."""
        return [s for s in (self.daemon, self.webserver.service) if s is not None]

    def stop(self) -> dict[str, int]:
        for service in self.services():
            self.exit_codes[service.name] = service.stop()
        return self.exit_codes


@contextmanager
def dagster_services(
    env: Mapping[str, str], log_dir: Path, workspace: Path = WORKSPACE
) -> Iterator[DagsterServices]:
    """dagster-webserver on workspace.yaml, ready when the code location loaded; the daemon
    on `start_daemon()`. Whatever the test does, nothing of theirs outlives the block."""
    webserver = start_webserver(env, log_dir, workspace)
    services = DagsterServices(webserver, env, log_dir, workspace)
    try:
        webserver.wait_loaded()
        yield services
    finally:
        services.stop()
        for service in services.services():
            service.kill_group()


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


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin_dirs() -> list[Path]:
    """Where PostgreSQL server binaries may be, best first: $WW_TEST_PG_BIN, the `pgserver`
    wheel of the test extras (ships initdb/pg_ctl/postgres, so a fresh machine has them),
    then the machine's /usr/lib/postgresql/<version>/bin, newest first."""
    found: list[Path] = []
    if os.environ.get("WW_TEST_PG_BIN"):
        found.append(Path(os.environ["WW_TEST_PG_BIN"]))
    # located, not imported: importing pgserver has side effects (lock files, users)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    machine = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                     key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                     reverse=True)
    found.extend(machine)
    return [d for d in found if (d / "initdb").exists() and (d / "pg_ctl").exists()]


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of our own: a temp data dir, 127.0.0.1 on a free port, a password
    login. Never the machine's server on :5432."""

    bin_dir: Path
    data_dir: Path
    port: int
    log: Path
    run_as: pwd.struct_passwd | None
    user: str = "dagster"
    password: str = "dagster-test-pw"
    database: str = "postgres"
    _owned_dirs: list[Path] = field(default_factory=list)

    def _run(self, argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:  # initdb and postgres refuse to run as root
            kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid,
                      "extra_groups": []}
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False, cwd="/", **kwargs)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}\n"
                               f"{result.stderr}\n{log}")

    def start(self) -> None:
        pwfile = self.data_dir.parent / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        self._check(self._run([
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        ]), "initdb")
        pwfile.unlink()
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=100 -c shared_buffers=32MB")
        self._check(self._run([
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        ]), "pg_ctl start")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                       "-w", "-t", "60", "stop"])

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _readable_by(user: pwd.struct_passwd | None, bin_dir: Path, scratch: Path) -> Path:
    """`bin_dir`, or a copy of its installation the unprivileged user can execute (a venv
    under /root is not traversable by other users)."""
    if user is None:
        return bin_dir
    try:
        probe = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True,
                               user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                               check=False, cwd="/", timeout=30)
        if probe.returncode == 0:
            return bin_dir
    except PermissionError:
        pass
    # keep the layout: the pgserver wheel's binaries find their libraries at
    # $ORIGIN/../../../pgserver.libs
    install = scratch / bin_dir.parent.parent.name / bin_dir.parent.name
    shutil.copytree(bin_dir.parent, install, symlinks=True)
    libs = bin_dir.parent.parent.parent / f"{bin_dir.parent.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, scratch / libs.name, symlinks=True)
    return install / "bin"


@contextmanager
def postgres_server(log_dir: Path) -> Iterator[PostgresServer]:
    """Starts a PostgreSQL server of our own, stops it and removes its data afterwards.

    The data directory lives in a fresh directory under the system temp dir owned by the
    unprivileged user (pytest's own temp root is private to root); the server log is copied
    to `log_dir` on the way out."""
    dirs = postgres_bin_dirs()
    if not dirs:
        raise RuntimeError("no PostgreSQL server binaries: install the test extras "
                           "(pgserver) or set WW_TEST_PG_BIN")
    user = _unprivileged_user()
    scratch = Path(tempfile.mkdtemp(prefix="ww-pg-"))
    server: PostgresServer | None = None
    try:
        os.chmod(scratch, 0o755)
        bin_dir = _readable_by(user, dirs[0], scratch)
        cluster = scratch / "cluster"
        cluster.mkdir(mode=0o700)
        if user is not None:
            os.chown(cluster, user.pw_uid, user.pw_gid)
        data = cluster / "data"
        log = cluster / "postgres.log"
        server = PostgresServer(bin_dir, data, free_port(), log, user)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
            log_dir.mkdir(parents=True, exist_ok=True)
            if server.log.exists():
                shutil.copy(server.log, log_dir / "postgres.log")
        shutil.rmtree(scratch, ignore_errors=True)


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


class Stopwatch:
    """Prints how long each phase of an end-to-end test took (shown when the test fails, or
    with `pytest -s`): where the minutes go on a 2-core machine."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.started:6.1f}s  +{now - self.last:5.1f}s] {what}", flush=True)
        self.last = now


# ---------------------------------------------------------------- the user's path

HISTORY = list(HISTORY_KEY.path)
SYNC_SENSOR = "history_sync_sensor"
# checks that must be on the asset page once the data-quality checks are in the definitions
KNOWN_CHECKS = {"history_rowcount_matches_source", "history_no_duplicate_keys"}


def ui_env(ww_env: Path, dagster_home: Path, today: date,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The services' environment (also set in this process, so in-process reads agree).

    The sync refreshes only today and yesterday (REFRESH_DAYS=1, short lookbacks): it never
    writes the backfilled days while the backfill runs."""
    overrides = {
        "WW_HOME": str(ww_env),
        "DAGSTER_HOME": str(dagster_home),
        "WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME": str(today - timedelta(days=6)),
        "WONDERWARE_PIPELINE_TAG_CHUNK_SIZE": "4",
        "WONDERWARE_PIPELINE_SYNC_INTERVAL": "30",
        "WONDERWARE_PIPELINE_SYNC_SAFETY_MARGIN": "0",
        "WONDERWARE_PIPELINE_SYNC_LOOKBACK": "60",
        "WONDERWARE_PIPELINE_SYNC_INITIAL_LOOKBACK": "60",
        "WONDERWARE_PIPELINE_REFRESH_DAYS": "1",
    }
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    return service_env(overrides)


def create_plant_and_catalog(env: dict[str, str], days: float, tags: int) -> tuple[Settings, list[str]]:
    """An emulated plant (`ww simulate create`) and its tag catalog (the `wonderware/tags`
    materialization a person clicks first), on the instance in DAGSTER_HOME."""
    subprocess.run([str(BIN / "ww"), "simulate", "create", "--days", str(days),
                    "--tags", str(tags)], env=env, check=True, capture_output=True, timeout=120)
    settings = Settings.from_env()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=[TAGS_KEY]).success
        chunks = sorted(instance.get_dynamic_partitions("tag_chunks"))
    return settings, chunks


def history_check_names(settings: Settings) -> set[str]:
    """The checks on wonderware/history in the code location's definitions."""
    graph = build_definitions(settings).resolve_asset_graph()
    return {key.name for key in graph.asset_check_keys if key.asset_key == HISTORY_KEY}


def catalog_tags(settings: Settings, chunks: list[str]) -> list[str]:
    warehouse = ChdbWarehouse(settings.chdb_path, settings.clickhouse_db)
    with warehouse.connect() as conn:
        return sorted(t for chunk in chunks for t in chunk_tags(conn, warehouse.database, chunk))


def assert_rows_exact(settings: Settings, tags: list[str], first: date, last: date) -> int:
    expected = stored_points(settings.historian_sqlite, tags, first, last)
    actual = warehouse_points(ChdbWarehouse(settings.chdb_path, settings.clickhouse_db),
                              tags, first, last)
    assert expected, "the plant has no points on the backfilled days"
    assert len(actual) == len(expected)
    assert actual == expected
    return len(actual)


def assert_checks_passed(graphql: GraphQL, settings: Settings,
                         keys: list[str]) -> dict[str, list[str]]:
    """Every partitioned check of wonderware/history was evaluated on every key, and every
    ERROR (blocking) one passed, as the asset page reads them. Not vacuous: when the
    definitions have checks, the page must list them, partitioned.

    WARN checks only have to be evaluated here. Returns the warnings by check."""
    listed = check_names(graphql, HISTORY)
    defined = history_check_names(settings)
    assert set(listed) == defined
    partitioned = sorted(name for name, is_partitioned in listed.items() if is_partitioned)
    if defined:
        assert partitioned, f"checks {sorted(defined)} are on the page but none is partitioned"
        assert KNOWN_CHECKS & defined <= set(partitioned)
    problems, warnings = [], {}
    for (name, key), execution in partition_check_results(
        graphql, HISTORY, partitioned, keys
    ).items():
        evaluation = (execution or {}).get("evaluation")
        if not evaluation:
            problems.append(f"{name} {key}: never evaluated ({execution})")
        elif not evaluation["success"]:
            if evaluation["severity"] == "ERROR":
                problems.append(f"{name} {key}: {evaluation['description']}")
            else:
                warnings.setdefault(name, []).append(f"{key}: {evaluation['description']}")
    assert not problems, "\n".join(problems)
    return warnings


def backfill_and_verify(ui: DagsterServices, settings: Settings, chunks: list[str],
                        first: date, last: date, clock: Stopwatch) -> list[str]:
    """The user's backfill over first..last × every chunk, from the launcher to the asset
    page (starting the daemon right after the launch, if it is not running): the backfill completes with every run successful, the partition health counts every
    key materialized and none failed, ClickHouse holds exactly the historian's points, and the
    partitioned checks passed. Returns the partition keys."""
    graphql = ui.webserver.graphql
    keys = [f"{c}|{d}" for c in chunks for d in _days(first, last)]
    backfill_id = launch_history_backfill(
        graphql, HISTORY, f"{chunks[0]}|{first}", f"{chunks[-1]}|{last}",
        title=f"e2e: {first}..{last} x all chunks",
    )
    ui.start_daemon()
    clock.lap(f"backfill {backfill_id} launched, daemon up")
    backfill = wait_backfill(graphql, backfill_id, timeout_s=240, alive=ui.check_alive)
    clock.lap(f"backfill {backfill_id} {backfill['status']}")
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["numPartitions"] == len(keys)
    assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill

    stats = partition_stats(graphql, HISTORY)
    assert (stats["numMaterialized"], stats["numFailed"]) == (len(keys), 0), stats
    assert_rows_exact(settings, catalog_tags(settings, chunks), first, last)
    warnings = assert_checks_passed(graphql, settings, keys)
    clock.lap(f"rows and checks verified; WARN check results: {warnings}")
    return keys


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def shut_down(ui: DagsterServices, clock: Stopwatch, expected_failures: list[str] | None = None) -> None:
    """An operator's shutdown: the sync sensor off in the UI, queued and running runs
    finished (none of them failed but the `expected_failures` run ids), then Ctrl-C to both
    services, which exit 0 and leave no process behind."""
    stop_sensor(ui.webserver.graphql, SYNC_SENSOR)
    wait_no_active_runs(ui.webserver.graphql, timeout_s=120, alive=ui.check_alive)
    clock.lap("sync sensor stopped, runs finished")
    failed = [r for r in runs(ui.webserver.graphql, statuses=["FAILURE"])
              if r["runId"] not in (expected_failures or [])]
    assert not failed, f"failed runs: {failed}"
    exit_codes = ui.stop()
    clock.lap("services stopped")
    assert exit_codes == {"daemon": 0, "webserver": 0}, (
        exit_codes, *(service.tail() for service in ui.services()))
    leftovers = [p for service in ui.services() for p in service.wait_group_gone()]
    assert not leftovers, f"processes left after shutdown: {leftovers}"
