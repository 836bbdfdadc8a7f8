"""`/healthz` and `/metrics` over HTTP, served from a daemon thread while `filesync daemon` runs.

The stdlib server is enough: two read-only endpoints, a few requests a minute from Docker's
HEALTHCHECK and a Prometheus scraper. It is threaded so a slow database ping never holds up a scrape.

The rule `/healthz` follows (the daemon's `probe`): 503 with a `reason` when the daemon is shutting
down, its scheduler thread is not running, the database does not answer a ping within 5 s, or the
last run could not do its work at all: it crashed (`error`: a bug, a missing table, a setting refused
at run time) or could not reach its database or source (`database_unavailable`,
`source_unavailable`), or had a destination stopped for refusing the setup (`stopped`: credentials,
quota). The next run that gets through makes it 200 again. A daemon whose every run
fails must not look healthy; the last run rather than the last few decides, so a broken deployment
shows at its first run, not after several schedule intervals. A run that finished with some files
failed or retried (`failed`), or was stopped by a signal (`interrupted`), is healthy: those files
carry their own reasons in `filesync status`. Before the first run ends there is nothing to judge.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from filesync import metrics
from filesync.errors import ConfigError

Probe = Callable[[], tuple[bool, dict[str, Any]]]

#: How a run ended (`last_run["result"]`) when it could not do its work at all: /healthz answers 503.
BROKEN_RESULTS = frozenset({"error", "database_unavailable", "source_unavailable", "stopped"})


def run_problem(last_run: Mapping[str, Any] | None) -> str | None:
    """Why the last run makes the daemon unhealthy (the `reason` of the 503), or None when it does not."""
    if not last_run or last_run.get("result") not in BROKEN_RESULTS:
        return None
    error = last_run.get("error")
    return f"last run failed ({last_run['result']})" + (f": {error}" if error else "")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "filesync"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            healthy, body = self.server.probe()
            self._send(200 if healthy else 503, json.dumps(body).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b'{"error":"not found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the log; access lines are not kept."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probe: Probe) -> None:
        self.probe = probe
        super().__init__(address, _Handler)


class HealthServer:
    """Serves `/healthz` from `probe()` -> (healthy, body) and `/metrics` from `metrics.REGISTRY`."""

    def __init__(self, host: str, port: int, probe: Probe) -> None:
        try:
            self._server = _Server((host, port), probe)
        except OSError as exc:
            raise ConfigError(
                f"FILESYNC_HTTP_PORT={port} is invalid: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="filesync-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
