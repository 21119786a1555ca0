"""`ww status --serve`: the status document over HTTP, at the replaced system's address.

Its users' alert scripts read `newest_data` from `GET /consumption/wonderware_status` (port
4000); this serves the `ww status --json` document there, so they work by changing a host
name. Read-only (GET only), loopback unless told otherwise, one request at a time, and each
request opens the warehouse for its queries and closes it: the embedded store is never held
between requests (a backfill or the sync gets it at once).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlsplit

STATUS_PATH = "/consumption/wonderware_status"


class StatusServer(HTTPServer):
    """Answers GET STATUS_PATH with `report()`; `errors` are a system's failures (503)."""

    def __init__(self, address: tuple[str, int], report: Callable[[], dict[str, Any]],
                 errors: tuple[type[BaseException], ...]) -> None:
        super().__init__(address, _Handler)
        self.report = report
        self.errors = errors


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "ww-status"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path != STATUS_PATH:
            self._send(404, {"error": f"not found: the status is at {STATUS_PATH}"})
            return
        try:
            report = self.server.report()
        except self.server.errors as error:
            self._send(503, {"error": str(error)})
            return
        self._send(200, report)

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(report: Callable[[], dict[str, Any]], errors: tuple[type[BaseException], ...],
          host: str, port: int) -> None:
    """Serve until Ctrl-C."""
    with StatusServer((host, port), report, errors) as server:
        print(f"serving ww status at http://{host}:{server.server_port}{STATUS_PATH} "
              "(Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
