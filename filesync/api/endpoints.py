"""The JSON endpoints: what each answers, from the ledger's read models and the run going on now.

Status, runs and retry come from `filesync.ledger.reports` (the same records `filesync status --json` and
`filesync retry` use), the file browser from `filesync.ledger.browse`; the live progress of this daemon's
run from `LiveRun`. Lists are wrapped in an object (`{"runs": [...]}`) so fields can be added later
without breaking a client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from filesync.api.live import LiveRun
from filesync.api.routing import JSON, ApiError, Request, Response, plain
from filesync.app import App
from filesync.errors import ConfigError, LedgerError
from filesync.ledger import PostgresLedger, browse, reports
from filesync.redaction import active

MAX_RUNS = 200
RETRY_FIELDS = {
    "failed": "parked files",
    "waiting": "files waiting for their next attempt",
    "skipped": "files skipped for their type",
    "file_ids": "these file ids (an unknown id is refused, nothing changed)",
    "path": "path globs: * within a folder, ** across folders",
    "sink": "only files with a transfer to this destination not done",
    "error_class": "only files whose error has this class (network, timeout, client, ...)",
    "since": "only files that changed since this ISO 8601 time",
    "all": "every parked file",
}

#: What `POST /api/run` found: started, or why not.
RunRequest = str  # "started" | "running" | "stopping"


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Every JSON answer passes the one redactor: no installed secret leaves the process in a body."""
    body = json.dumps(active().value(plain(value)), ensure_ascii=False).encode()
    return Response(status, body, JSON, headers or {})


@dataclass
class Endpoints:
    """The handlers, bound to this daemon: its App (built on demand), its live run, its scheduler."""

    app: Callable[[], App]
    live: LiveRun
    run_now: Callable[[], RunRequest]

    def _ledger(self) -> PostgresLedger:
        try:
            ledger = self.app().ledger
        except ConfigError as exc:  # a setting refused at build time: the daemon logged it, the API cannot read
            raise ApiError(503, f"the ledger cannot be opened: {exc}") from None
        if not isinstance(ledger, PostgresLedger):
            raise ApiError(501, f"the API reads PostgreSQL; this daemon's ledger is a {type(ledger).__name__}")
        return ledger

    def explain(self, exc: LedgerError) -> ApiError | None:
        """A database error that means filesync's tables are not there yet (no run, no `filesync migrate`)."""
        try:
            missing = not reports.exists(self._ledger())
        except Exception:
            return None
        if missing:
            return ApiError(503, "filesync's tables do not exist in this database yet: the first run creates them "
                                 "(or `filesync migrate`)")
        return None

    def _with_progress(self, record: reports.RunRecord) -> dict[str, Any]:
        progress = self.live.snapshot() if record.status == "running" else None
        return {**record.as_dict(), "progress": progress if progress and progress["run_id"] == record.id else None}

    # --- reads --------------------------------------------------------------------------------------
    def status(self, request: Request) -> Response:
        app = self.app()
        snapshot = reports.status(self._ledger(), runs=5, errors=5, routes=app.config.routes,
                                  sinks_for=app.routes.sinks_for)
        return json_response(snapshot.as_dict())

    def runs(self, request: Request) -> Response:
        limit = request.int_query("limit", 20, 1, MAX_RUNS)
        return json_response({"runs": [self._with_progress(r) for r in reports.runs(self._ledger(), limit)]})

    def run(self, request: Request) -> Response:
        raw = request.params["id"]
        if not raw.isdigit():
            raise ApiError(400, "a run id is a whole number")
        record = reports.run(self._ledger(), int(raw))
        if record is None:
            raise ApiError(404, f"no run {raw}")
        return json_response(self._with_progress(record))

    def files(self, request: Request) -> Response:
        try:
            page = browse.files(
                self._ledger(), state=request.text_query("state"), sink=request.text_query("sink"),
                q=request.text_query("q"), cursor=request.text_query("cursor"),
                limit=request.int_query("limit", 50, 1, browse.MAX_PAGE),
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response(page.as_dict())

    def file(self, request: Request) -> Response:
        found = browse.story(self._ledger(), request.params["id"])
        if found is None:
            raise ApiError(404, f"no file {request.params['id']!r} in the ledger")
        return json_response(found.as_dict())

    # --- changes ------------------------------------------------------------------------------------
    def retry(self, request: Request) -> Response:
        selection = retry_selection(request.json())
        try:
            queued = reports.retry(self._ledger(), selection)
        except reports.UnknownFiles as exc:
            raise ApiError(400, str(exc), extra={"unknown_ids": exc.ids}) from None
        return json_response({"queued": queued})

    def start_run(self, request: Request) -> Response:
        outcome = self.run_now()
        if outcome == "started":
            return json_response({"run": "started"}, status=202)
        if outcome == "running":
            raise ApiError(409, "a run is already going", extra={"run_id": self.live.run_id})
        raise ApiError(503, "the daemon is not scheduling runs (starting or shutting down)")


def retry_selection(body: dict[str, Any]) -> reports.RetrySelection:
    """`filesync retry`'s selectors from a JSON body; 400 naming the field that is wrong."""
    unknown = sorted(set(body) - set(RETRY_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)} (known: {', '.join(RETRY_FIELDS)})")

    def flag(name: str) -> bool:
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false")
        return value

    def texts(name: str) -> tuple[str, ...]:
        value = body.get(name, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ApiError(400, f"{name} must be a list of non-empty strings")
        return tuple(value)

    def text(name: str) -> str | None:
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ApiError(400, f"{name} must be a non-empty string")
        return value

    since_text = text("since")
    try:
        since = datetime.fromisoformat(since_text) if since_text else None
    except ValueError:
        raise ApiError(400, "since must be an ISO 8601 date or time") from None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without its zone is read as UTC, whatever the server's zone
    selection = reports.RetrySelection(
        failed=flag("failed"), waiting=flag("waiting"), skipped=flag("skipped"), file_ids=texts("file_ids"),
        path_globs=texts("path"), sink=text("sink"), error_class=text("error_class"), since=since,
        all_=flag("all"),
    )
    if not selection.selects:
        raise ApiError(400, f"name what to retry: one of {', '.join(RETRY_FIELDS)}")
    return selection
