"""Read models of the ledger for people and scripts: `filesync status`, `runs`, `report`, `retry`, the status API.

The engine's queries live in queries.sql and answer what a run needs; these answer what an operator asks,
in the operator's words: a claimed file is `in_progress`, a pending file not due yet is `waiting`. Every
record has `as_dict()` (JSON-ready: times as ISO 8601) so the CLI's `--json` and the HTTP API share one shape.
Everything here only reads, except `retry` (the operator's command) and the alerts' memory in `meta`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from typing import Any

from psycopg import sql

from filesync.ledger.base import Ledger
from filesync.ledger.sql import Queries
from filesync.ledger.store import PostgresLedger
from filesync.model import Selection
from filesync.settings import AppTable

#: The operator's states of a file, in the order they are shown.
STATES = ("pending", "in_progress", "waiting", "done", "skipped", "failed")
#: The name files with no transfer yet (not inspected, or skipped: no route) are counted under.
NO_DESTINATION = "-"

SinksFor = Callable[[str], list[str]]


class UnknownFiles(LookupError):
    """Ids the ledger does not hold: an operator's typo must not read as "0 queued"."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        shown = ", ".join(self.ids[:10]) + (f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else "")
        super().__init__(f"no such file id in the ledger: {shown}")


def _iso(value: Any) -> Any:
    """Times as ISO 8601, containers walked: what `as_dict` hands to json.dumps."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso(v) for v in value]
    return value


class _Record:
    def as_dict(self) -> dict[str, Any]:
        return _iso(asdict(self))  # type: ignore[call-overload, no-any-return]


# --- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord(_Record):
    """One row of the runs table. `finished_at` is None while running and for an abandoned run."""

    id: int
    worker: str
    host: str
    pid: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    copied: int
    skipped: int
    failed: int
    retry_later: int
    bytes: int
    error: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None without an end."""
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "duration": self.duration}


@dataclass(frozen=True)
class DueFile(_Record):
    file_id: str
    path: str | None
    due_at: datetime
    attempts: int


@dataclass(frozen=True)
class ErrorCount(_Record):
    """One current reason files are parked or waiting, how many share it, and one of them."""

    error_class: str
    status: int | None
    error: str
    count: int
    example_id: str
    last_seen: datetime


@dataclass(frozen=True)
class ProblemFile(_Record):
    file_id: str
    path: str | None
    state: str  # failed, skipped, waiting, pending (retried, due again), in_progress
    error_class: str
    status: int | None
    error: str
    attempts: int
    updated_at: datetime
    due_at: datetime


@dataclass(frozen=True)
class Backfill(_Record):
    """What the next run's backfill sends because FILESYNC_ROUTES changed since the last run."""

    routes_before: str | None  # None: no run recorded its routes yet
    routes_now: str
    files: int  # done or skipped files that will be sent again to some destination
    skipped_files: int  # of which skipped files whose type now has a route
    per_sink: dict[str, int] = field(default_factory=dict)  # destination -> files it will receive

    @property
    def changed(self) -> bool:
        return self.routes_before is not None and self.routes_before != self.routes_now


@dataclass(frozen=True)
class StatusSnapshot(_Record):
    """The ledger at a glance: files per state, each destination's backlog, what is due, runs, errors."""

    generated_at: datetime
    files: dict[str, int]  # operator's state -> files (every state present, zeros included)
    destinations: dict[str, dict[str, int]]  # sink (NO_DESTINATION: no transfer yet) -> state -> transfers
    oldest_due: DueFile | None
    next_retry: DueFile | None
    runs: list[RunRecord]
    errors: list[ErrorCount]
    problems: list[ProblemFile]
    rows_without_id: int | None  # None when the app's table could not be read
    backfill: Backfill | None  # None unless the routes were given

    @property
    def due_now(self) -> int:
        return self.files.get("pending", 0)

    @property
    def waiting(self) -> int:
        return self.files.get("waiting", 0)

    def as_dict(self) -> dict[str, Any]:
        out = {**super().as_dict(), "due_now": self.due_now, "waiting": self.waiting,
               "runs": [r.as_dict() for r in self.runs]}
        if self.backfill is not None:
            out["backfill"]["changed"] = self.backfill.changed
        return out


@dataclass(frozen=True)
class RetrySelection:
    """Which files `filesync retry` makes due now. States default to failed and waiting when a filter is
    given, to every retryable state when ids are named; `all_` alone keeps its old meaning: every parked file."""

    failed: bool = False
    waiting: bool = False
    skipped: bool = False
    file_ids: tuple[str, ...] = ()
    path_globs: tuple[str, ...] = ()
    sink: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    all_: bool = False

    @property
    def selects(self) -> bool:
        """False when nothing was asked for: a bare `filesync retry` is a usage error, not "retry all"."""
        return bool(self.all_ or self.failed or self.waiting or self.skipped or self.file_ids or self.path_globs
                    or self.sink or self.error_class or self.since)

    @property
    def resend(self) -> bool:
        """`--sink NAME --all`: also the files that destination holds, sent to it again (replacing them)."""
        return self.all_ and self.sink is not None

    def states(self) -> tuple[bool, bool, bool]:
        """(failed, waiting, skipped) selected."""
        if self.failed or self.waiting or self.skipped:
            return self.failed, self.waiting, self.skipped
        if self.file_ids:
            return True, True, True
        if self.all_ and not (self.path_globs or self.sink or self.error_class or self.since):
            return True, False, False
        return True, True, False


@dataclass(frozen=True)
class ReportRow(_Record):
    """One file at one destination (destination None: the file has no transfer yet), for `filesync report`."""

    file_id: str
    path: str | None
    kind: str | None
    destination: str | None
    state: str
    remote_id: str | None
    url: str | None
    bytes: int | None
    attempts: int
    error_class: str | None
    error: str | None
    copied_at: datetime | None
    derived: str | None = None  # how a fitted/converted copy was made (FILESYNC_TRANSFORMS); None: the original
    original_bytes: int | None = None  # the original's size when the copy was derived

    FIELDS = ("file_id", "path", "kind", "destination", "state", "remote_id", "url", "bytes", "attempts",
              "error_class", "error", "copied_at", "derived", "original_bytes")


# --- access ------------------------------------------------------------------------------------------


@cache
def _queries(schema: str, app: AppTable) -> Queries:
    return Queries(schema, app, "reports.sql")


def _pg(ledger: Ledger) -> PostgresLedger:
    if not isinstance(ledger, PostgresLedger):
        raise TypeError(f"reports read PostgreSQL: {type(ledger).__name__} is not a PostgresLedger")
    return ledger


def _q(ledger: PostgresLedger, name: str) -> sql.Composed:
    return _queries(ledger.schema, ledger.app)[name]


def exists(ledger: Ledger) -> bool:
    """Whether filesync's tables are there (a database no run has migrated has none)."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "ledger_exists"), {"schema": pg.schema}).fetchone()
    return bool(row and row[0])


# --- status ------------------------------------------------------------------------------------------


def status(ledger: Ledger, *, runs: int = 5, errors: int = 5, problems: int = 20, routes: str | None = None,
           sinks_for: SinksFor | None = None) -> StatusSnapshot:
    """The snapshot `filesync status` prints and the status API serves. With `routes` (FILESYNC_ROUTES now)
    and `sinks_for`, also what the next run's backfill will send if the routes changed since the last run."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        now = datetime.now(UTC)
        files = dict.fromkeys(STATES, 0)
        files.update({state: int(n) for state, n in conn.execute(_q(pg, "status_files"))})
        destinations: dict[str, dict[str, int]] = {}
        for sink, state, n in conn.execute(_q(pg, "status_destinations")):
            destinations.setdefault(sink or NO_DESTINATION, {})[state] = int(n)
        oldest = conn.execute(_q(pg, "status_oldest_due")).fetchone()
        soonest = conn.execute(_q(pg, "status_next_retry")).fetchone()
        error_rows = conn.execute(_q(pg, "status_errors"), {"limit": errors}).fetchall()
        problem_rows = conn.execute(_q(pg, "status_problems"), {"limit": problems}).fetchall()
    try:
        without_id: int | None = pg.rows_without_id()
    except Exception:  # the app's table is the app's: status still answers about the ledger
        without_id = None
    return StatusSnapshot(
        generated_at=now,
        files=files,
        destinations=destinations,
        oldest_due=DueFile(*oldest) if oldest else None,
        next_retry=DueFile(*soonest) if soonest else None,
        runs=_latest_runs(pg, runs) if runs else [],
        errors=[ErrorCount(*row) for row in error_rows],
        problems=[ProblemFile(*row) for row in problem_rows],
        rows_without_id=without_id,
        backfill=backfill(pg, routes, sinks_for) if routes is not None and sinks_for is not None else None,
    )


def errors(ledger: Ledger, limit: int = 5) -> list[ErrorCount]:
    """The most common current errors of parked and waiting files, each with a count."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        return [ErrorCount(*row) for row in conn.execute(_q(pg, "status_errors"), {"limit": limit})]


def backlog(ledger: Ledger) -> int:
    """Files not done yet: due, waiting or in progress."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "status_backlog")).fetchone()
    return int(row[0]) if row else 0


def backfill(ledger: Ledger, routes: str, sinks_for: SinksFor) -> Backfill:
    """What `requeue_for_routes` will send at the next run's start, read-only: the done or skipped files
    whose type's route now names a destination that does not hold them, when the routes changed."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "routes_seen")).fetchone()
        before = str(row[0]) if row else None
        groups = conn.execute(_q(pg, "backfill_groups")).fetchall() if before not in (None, routes) else []
    files = skipped = 0
    per_sink: dict[str, int] = {}
    for mime, state, holding, n in groups:
        missing = [s for s in sinks_for(mime) if s not in set(holding or ())]
        if not missing:
            continue
        files += n
        skipped += n if state == "skipped" else 0
        for sink in missing:
            per_sink[sink] = per_sink.get(sink, 0) + n
    return Backfill(routes_before=before, routes_now=routes, files=files, skipped_files=skipped,
                    per_sink=dict(sorted(per_sink.items())))


# --- runs --------------------------------------------------------------------------------------------


def runs(ledger: Ledger, limit: int = 20) -> list[RunRecord]:
    """The latest runs, newest first."""
    return _latest_runs(_pg(ledger), limit)


def _latest_runs(pg: PostgresLedger, limit: int) -> list[RunRecord]:
    with pg.db.transaction() as conn:
        return [RunRecord(*row) for row in conn.execute(_q(pg, "runs_latest"), {"limit": limit})]


def run(ledger: Ledger, run_id: int) -> RunRecord | None:
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "run_by_id"), {"run_id": run_id}).fetchone()
    return RunRecord(*row) if row else None


# --- retry -------------------------------------------------------------------------------------------


def states_of(ledger: Ledger, file_ids: Sequence[str]) -> dict[str, str]:
    """The operator's state of each of these ids the ledger holds (unknown ids are absent)."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        return {str(fid): str(state) for fid, state in conn.execute(_q(pg, "known_ids"), {"ids": list(file_ids)})}


def retry(ledger: Ledger, selection: RetrySelection) -> int:
    """Make exactly the selected files due now, in one transaction; how many. Parked and skipped files start
    over (fresh attempts, error cleared) and their parked transfers are pending again; waiting files keep
    their attempts (the backoff goes on counting towards parking). Files being copied now are left alone.
    UnknownFiles, and nothing changed, when a named id is not in the ledger."""
    pg = _pg(ledger)
    failed, waiting, skipped = selection.states()
    params = {
        "failed": failed, "waiting": waiting, "skipped": skipped,
        "ids": list(selection.file_ids) or None,
        "path_re": Selection(path_globs=selection.path_globs).path_regex(),
        "sink": selection.sink, "error_class": selection.error_class, "since": selection.since,
        "resend": selection.resend,
    }
    with pg.db.transaction() as conn:
        if selection.file_ids:
            known = {r[0] for r in conn.execute(_q(pg, "known_ids"), {"ids": list(selection.file_ids)})}
            missing = [fid for fid in dict.fromkeys(selection.file_ids) if fid not in known]
            if missing:
                raise UnknownFiles(missing)
        ids = [r[0] for r in conn.execute(_q(pg, "retry_select"), params)]
        if not ids:
            return 0
        conn.execute(_q(pg, "retry_parked_transfers"), {"ids": ids, "sink": selection.sink})
        if selection.resend:
            conn.execute(_q(pg, "resend_transfers"), {"ids": ids, "sink": selection.sink})
        return int(conn.execute(_q(pg, "retry_files"), {"ids": ids}).rowcount)


# --- a run's selection, the report, the dry run --------------------------------------------------------------


def due_count(ledger: Ledger, selection: Selection) -> int:
    """Due files the selection takes (its limit applied): the total a narrowed run's display counts down."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "due_selected"), {
            "ids": sorted(selection.file_ids) if selection.file_ids is not None else None,
            "path_re": selection.path_regex(), "since": selection.since, "until": selection.until,
        }).fetchone()
    n = int(row[0]) if row else 0
    return n if selection.limit is None else min(n, selection.limit)


def report_rows(ledger: Ledger, *, since: datetime | None = None, until: datetime | None = None,
                state: str | None = None, sink: str | None = None, run_id: int | None = None,
                batch: int = 2000) -> Iterator[ReportRow]:
    """Every file at every destination, filtered, in file id order; streamed through a server-side cursor,
    so a million rows never sit in memory (the transaction stays open while the caller iterates). `since`
    and `until` bound when the row last changed; `run_id`: the files that run recorded an outcome for."""
    pg = _pg(ledger)
    params = {"since": since, "until": until, "state": state, "sink": sink, "run_id": run_id}
    with pg.db.transaction() as conn, conn.cursor(name="filesync_report") as cursor:
        cursor.itersize = batch
        cursor.execute(_q(pg, "report_rows"), params)
        for row in cursor:
            yield ReportRow(*row)


@dataclass(frozen=True)
class PlanRow:
    """What the dry run knows of one app row before it looks at the object: its ledger state, if any."""

    file_id: str
    path: str | None
    date_taken: str | None
    copied: bool
    duplicates: int
    state: str | None = None  # None: not in the ledger yet
    ledger_path: str | None = None
    attempts: int = 0
    due_at: datetime | None = None
    claimed: bool = False
    error_class: str | None = None
    error: str | None = None
    mime: str | None = None
    done_sinks: tuple[str, ...] = ()
    parked_sinks: dict[str, str] = field(default_factory=dict)


_PLAN_FIELDS = tuple(f.name for f in fields(PlanRow))


def plan_rows(ledger: Ledger) -> Iterator[PlanRow]:
    """The app rows a run would enqueue and the ledger files it would claim, in claim order, read-only (a
    database filesync never ran on has no ledger: every row not copied is new)."""
    pg = _pg(ledger)
    fresh = not exists(pg)
    with pg.db.transaction() as conn, conn.cursor(name="filesync_plan") as cursor:
        cursor.itersize = 1000
        cursor.execute(_q(pg, "plan_rows_fresh" if fresh else "plan_rows"))
        for row in cursor:
            values = dict(zip(_PLAN_FIELDS, row, strict=False))
            values["done_sinks"] = tuple(values.get("done_sinks") or ())
            values["parked_sinks"] = dict(values.get("parked_sinks") or {})
            yield PlanRow(**values)


def name_owner(ledger: Ledger, sink: str, name: str) -> str | None:
    """The file that holds `name` at `sink` already, if any (None too before the ledger exists)."""
    pg = _pg(ledger)
    if not exists(pg):
        return None
    with pg.db.transaction() as conn:
        row = conn.execute(_q(pg, "name_owner"), {"sink": sink, "name": name}).fetchone()
    return str(row[0]) if row else None


# --- alerts' memory ---------------------------------------------------------------------------------


def alert_state(ledger: Ledger, update: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Read, change and save the alerts' memory (meta 'alerts', JSON) in one transaction holding its row
    lock, so concurrent workers decide one after the other. `update` gets the old state, returns the new."""
    pg = _pg(ledger)
    with pg.db.transaction() as conn:
        conn.execute(_q(pg, "alert_state_init"))
        row = conn.execute(_q(pg, "alert_state_lock")).fetchone()
        try:
            old = json.loads(row[0]) if row else {}
        except ValueError:
            old = {}
        new = update(old if isinstance(old, dict) else {})
        conn.execute(_q(pg, "alert_state_save"), {"value": json.dumps(new, sort_keys=True)})
    return new


def dumps(value: Any) -> str:
    """JSON for `--json` outputs: records through `as_dict`, times as ISO 8601."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "as_dict"):
            return obj.as_dict()
        if isinstance(obj, datetime):
            return obj.isoformat()
        return str(obj)

    return json.dumps(value, default=default, indent=2)
