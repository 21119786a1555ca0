"""Service processes: each runs in its own process group on a free port, logs to a file under
the test's tmp_path (printed when a wait times out, so a failure says why), and stops the way
an operator stops it: SIGINT first (Ctrl-C, which lets Dagster shut its code servers down),
the whole group killed only if that does not finish within the deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests

from ww_assets_tests.conftest import REPO


BIN = Path(sys.executable).parent

T = TypeVar("T")

# Variables a developer's shell may carry that would point the services at real systems.
_ISOLATED = (
    "WONDERWARE_HOST",
    "CLICKHOUSE_HOST",
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


