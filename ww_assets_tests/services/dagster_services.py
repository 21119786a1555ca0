"""dagster-webserver and dagster-daemon on workspace.yaml, as real processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ww_assets_tests.conftest import REPO, free_port
from ww_assets_tests.services.graphql import GraphQL
from ww_assets_tests.services.processes import BIN, Service, start, wait_for


def dagster_home(path: Path, config: Path) -> Path:
    """A fresh DAGSTER_HOME holding a copy of `config` as its dagster.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, path / "dagster.yaml")
    return path


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


