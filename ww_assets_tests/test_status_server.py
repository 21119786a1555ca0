"""`ww status --serve`: the replaced system's status endpoint, as its users' alert scripts call
it (a real `ww` process on a free loopback port, real HTTP, the embedded store on disk)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import requests

from ww_assets_tests.conftest import REPO, free_port
from ww_assets_tests.services.processes import BIN, service_env, wait_for

WW = BIN / "ww"
PATH = "/consumption/wonderware_status"


def _ww(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(WW), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_status_document_is_served_where_the_alert_scripts_read_it(tmp_path: Path) -> None:
    env = service_env({"WW_HOME": str(tmp_path / "ww")})
    assert _ww("simulate", "create", "--days", "1", "--tags", "6", env=env).returncode == 0
    loaded = _ww("backfill", "--days", "1", env=env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(WW), "status", "--serve", "--port", str(port)], cwd=REPO,
                                  env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        served = wait_for("the status server", lambda: requests.get(url, timeout=30),
                          timeout_s=60)
        assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
        document = served.json()
        # the same document as `ww status --json`, which opens the embedded store meanwhile:
        # the server holds it only while it answers
        printed = _ww("status", "--json", env=env)
        assert printed.returncode == 0, printed.stderr
        expected = json.loads(printed.stdout)
        for moving in ("lag_seconds", "lag_note"):
            expected.pop(moving), document.pop(moving)
        assert document == expected and document["total_data_points"] > 0

        # alert_on_lag.sh: `date -d "$newest" +%s`
        newest = requests.get(url, timeout=30).json()["newest_data"]
        stamp = subprocess.run(["date", "-d", newest, "+%s"], capture_output=True, text=True)
        assert stamp.returncode == 0 and abs(int(stamp.stdout) - time.time()) < 7 * 86400

        # read-only, one address
        assert requests.get(f"http://127.0.0.1:{port}/other", timeout=30).status_code == 404
        assert requests.post(url, timeout=30).status_code == 501
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=30)
    assert code == 0, log.read_text()
    assert f"serving ww status at http://127.0.0.1:{port}{PATH}" in log.read_text()


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    env = service_env({"WW_HOME": str(tmp_path / "ww")})
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _ww("status", "--serve", "--port", str(port), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"ww: status --serve: 127.0.0.1:{port}:")
    assert len(result.stderr.strip().splitlines()) == 1
