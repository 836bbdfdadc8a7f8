"""`/healthz` and `/metrics` over HTTP, served from a daemon thread while `filesync daemon` runs.

The stdlib server is enough: a few requests a minute from Docker's HEALTHCHECK and a Prometheus
scraper, and an operator's page refreshing every few seconds. It is threaded so a slow database ping
never holds up a scrape. Every other request goes to `fallback` (the JSON API and the status page,
filesync/api), which answers it whole; this module only reads the request and writes the answer.

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
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from filesync import metrics
from filesync.errors import ConfigError

Probe = Callable[[], tuple[bool, dict[str, Any]]]
#: (method, target, headers, body) -> (status, headers, body): what answers the requests this module does not.
Fallback = Callable[[str, str, Mapping[str, str], bytes], tuple[int, list[tuple[str, str]], bytes]]
MAX_BODY = 64 * 1024  # bytes of a request body: the API's bodies are a few selectors

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
        elif self.server.fallback is not None:
            self._delegate()
        else:
            self._send(404, b'{"error":"not found"}', "application/json")

    def do_POST(self) -> None:
        self._delegate()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _delegate(self) -> None:
        fallback = self.server.fallback
        if fallback is None:
            self._send(404, b'{"error":"not found"}', "application/json")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is left unread
            self._send(413 if length > MAX_BODY else 400,
                       json.dumps({"error": f"the body must be 0 to {MAX_BODY} bytes"}).encode(), "application/json")
            return
        body = self.rfile.read(length) if length else b""
        status, headers, payload = fallback(self.command, self.path, dict(self.headers.items()), body)
        self._send(status, payload, None, headers)

    def _send(self, status: int, body: bytes, content_type: str | None,
              headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers or ():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if not any(name.lower() == "cache-control" for name, _ in headers or ()):
            self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the log; access lines are not kept."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probe: Probe, fallback: Fallback | None) -> None:
        if ":" in address[0]:  # FILESYNC_HTTP_HOST=::1 or ::
            self.address_family = socket.AF_INET6
        self.probe = probe
        self.fallback = fallback
        super().__init__(address, _Handler)


class HealthServer:
    """Serves `/healthz` from `probe()` -> (healthy, body), `/metrics` from `metrics.REGISTRY`, and anything
    else through `fallback` when one is given (404 otherwise)."""

    def __init__(self, host: str, port: int, probe: Probe, fallback: Fallback | None = None) -> None:
        try:
            self._server = _Server((host, port), probe, fallback)
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
