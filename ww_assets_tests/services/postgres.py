"""A PostgreSQL server of our own, for a Dagster instance on deploy/dagster.postgres.yaml."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ww_assets_tests.conftest import free_port


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


