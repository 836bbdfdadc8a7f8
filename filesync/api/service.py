"""The API as one object the daemon's HTTP server hands every request it does not answer itself.

`Api.handle(method, target, headers, body)` finds the route, applies the token rules, calls the handler
and turns every failure into `{"error": "..."}` with its status: 400 for a bad parameter, 401/403 for
the token rules, 404, 405, 409 for a run already going, 503 while the database cannot be reached, 500
(logged, no detail) for a bug. Bodies pass the one redactor, so no secret leaves in an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from filesync import redaction
from filesync.api import page
from filesync.api.auth import Gate
from filesync.api.endpoints import RETRY_FIELDS, Endpoints, RunRequest, json_response
from filesync.api.live import LiveRun
from filesync.api.openapi import document
from filesync.api.routing import Access, ApiError, Param, Request, Response, Route, find
from filesync.app import App
from filesync.errors import FilesyncError, LedgerError, LedgerUnavailable
from filesync.ledger import browse

log = structlog.get_logger("filesync.api")

#: (status, headers, body) as the HTTP server writes it.
Reply = tuple[int, list[tuple[str, str]], bytes]

_READ_ERRORS = {400: "a parameter is wrong", 401: "the token is missing or wrong",
                403: "closed: see the token rules", 503: "the database cannot be reached"}
_WRITE_ERRORS = {400: "the body is wrong", 401: "the token is missing or wrong",
                 403: "disabled: FILESYNC_HTTP_TOKEN is not set", 503: "the database cannot be reached"}

_RETRY_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: ({"type": "boolean"} if name in {"failed", "waiting", "skipped", "all"}
               else {"type": "array", "items": {"type": "string"}} if name in {"file_ids", "path"}
               else {"type": "string", "format": "date-time"} if name == "since"
               else {"type": "string"}) | {"description": text}
        for name, text in RETRY_FIELDS.items()
    },
}


class Api:
    """The JSON API and the status page of one daemon."""

    def __init__(self, *, host: str, token: str | None, app: Callable[[], App], live: LiveRun,
                 run_now: Callable[[], RunRequest], secrets: Iterable[str] = ()) -> None:
        self.gate = Gate(host, token or None)
        # The token, and every secret setting, are masked in any answer even before the first run installs them.
        redaction.install([*secrets, *([token] if token else [])])
        self.endpoints = Endpoints(app=app, live=live, run_now=run_now)
        self.routes = self._routes()
        self._openapi = document(self.routes)

    def _routes(self) -> list[Route]:
        e = self.endpoints
        return [
            Route("GET", "/api/status", e.status, Access.READ, "The ledger at a glance",
                  "What `filesync status --json` prints: files per state, transfers per destination and state, "
                  "the oldest due file, the next retry, the latest runs, the commonest errors, the latest problems.",
                  responses={200: "the snapshot", **_READ_ERRORS}),
            Route("GET", "/api/runs", e.runs, Access.READ, "The latest runs, newest first",
                  "Each run's record; a run this daemon is doing now carries `progress` (files and bytes done of "
                  "the total, rates, ETA), every other run `progress: null`.",
                  query=(Param("limit", "integer", "how many runs (1 to 200, default 20)"),),
                  responses={200: "`{\"runs\": [...]}`", **_READ_ERRORS}),
            Route("GET", "/api/runs/{id}", e.run, Access.READ, "One run, with live progress while it runs",
                  responses={200: "the run", 404: "no such run", **_READ_ERRORS}),
            Route("GET", "/api/files", e.files, Access.READ, "Files with their transfers, a page at a time",
                  "Keyset pagination in file id order: pass `next_cursor` as `cursor` for the next page; it is "
                  "null on the last one.",
                  query=(Param("state", "string", "only files in this state", browse.STATES),
                         Param("sink", "string", "only files with a transfer to this destination"),
                         Param("q", "string", "only files whose id or path contains this (any case)"),
                         Param("cursor", "string", "the `next_cursor` of the previous page"),
                         Param("limit", "integer", f"files per page (1 to {browse.MAX_PAGE}, default 50)")),
                  responses={200: "`{\"files\": [...], \"next_cursor\": ...}`", **_READ_ERRORS}),
            Route("GET", "/api/files/{id}", e.file, Access.READ, "One file's whole story",
                  "Its ledger row, every destination's transfer (state, remote id, URL, bytes, attempts, last "
                  "error), the names it took and the app's copied flag.",
                  responses={200: "the file", 404: "no such file in the ledger", **_READ_ERRORS}),
            Route("POST", "/api/retry", e.retry, Access.WRITE, "Make the selected files due now",
                  "The selectors of `filesync retry`; at least one is required. Answers how many files were queued.",
                  body=_RETRY_BODY, responses={200: "`{\"queued\": n}`", **_WRITE_ERRORS}),
            Route("POST", "/api/run", e.start_run, Access.WRITE, "Start a run now",
                  "The scheduler runs one now unless one is going (never two at once); the schedule goes on.",
                  responses={202: "`{\"run\": \"started\"}`", 409: "a run is already going", **_WRITE_ERRORS}),
            Route("GET", "/api/openapi.json", self._document, Access.PUBLIC, "This document"),
            Route("GET", "/", page.index, Access.PUBLIC, "The status page", content_type="text/html",
                  documented=False),
            Route("GET", "/assets/{name}", page.asset, Access.PUBLIC, "The status page's script and style",
                  documented=False),
        ]

    def _document(self, request: Request) -> Response:
        return json_response(self._openapi)

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """One request, answered: never raises."""
        request = Request.parse(method, target, headers, body)
        try:
            route, params = find(self.routes, request.method, request.path)
            self.gate.check(route.access, request.headers)
            response = route.handler(Request(request.method, request.path, request.query, request.headers,
                                             request.body, params))
        except ApiError as exc:
            response = json_response({"error": exc.message, **exc.extra}, exc.status, exc.headers)
        except LedgerUnavailable as exc:
            response = json_response({"error": f"database unavailable: {exc}"}, 503)
        except LedgerError as exc:
            known = self.endpoints.explain(exc)
            if known is not None:
                response = json_response({"error": known.message}, known.status)
            else:
                log.error("api_failed", path=request.path, error_class=type(exc).__name__, error=str(exc))
                response = json_response({"error": f"database error: {exc}"}, 500)
        except FilesyncError as exc:
            log.error("api_failed", path=request.path, error_class=type(exc).__name__, error=str(exc))
            response = json_response({"error": f"{type(exc).__name__}: {exc}"}, 500)
        except Exception as exc:  # a bug: logged with its traceback, answered without details
            log.exception("api_failed", path=request.path, error_class=type(exc).__name__)
            response = json_response({"error": "internal error (logged by the daemon)"}, 500)
        headers_out = [("Content-Type", response.content_type), ("Cache-Control", "no-store"),
                       ("X-Content-Type-Options", "nosniff"), *response.headers.items()]
        return response.status, list(dict(headers_out).items()), response.body
