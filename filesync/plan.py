"""`filesync run --dry-run`: what a run would do, decided without doing any of it.

A read-only planner, not the pipeline with its writes switched off: it reads the app's rows not copied with
their ledger state (ledger/reports.py: no migrate, no enqueue, no claim, no run record), inspects each object
the run would take from the source (stat and first bytes, as the run does), routes it, and checks each
destination's capabilities and the names already taken. Destinations are never contacted: whether a
destination holds a copy already is the run's to find out (it is then counted `existed`, not sent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from filesync import kinds
from filesync.app import App
from filesync.errors import FilesyncError, SourceNotFound
from filesync.ledger import reports
from filesync.model import Kind, Selection, SourceObject
from filesync.paths import UnsafePath, safe_relative
from filesync.sinks import accepts

COPY, SKIP, FAIL, WAIT, PARKED, BUSY, LATER, DONE = ("copy", "skip", "fail", "wait", "parked", "busy", "later",
                                                     "done")


@dataclass(frozen=True)
class Step:
    """What the run would do with one file: `action`, the destinations it would send to, and why."""

    action: str
    file_id: str
    path: str | None
    sinks: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    not_selected: int = 0  # due files a filter (--file, --path, --since, --until) leaves out
    rows_without_id: int = 0
    backfill: reports.Backfill | None = None
    fresh: bool = False  # no ledger yet: the run would create filesync's tables first

    def count(self, action: str) -> int:
        return sum(1 for s in self.steps if s.action == action)


def plan(app: App, selection: Selection) -> Plan:
    """The plan of one `filesync run` with this selection, reading only."""
    ledger = app.ledger
    result = Plan(fresh=not reports.exists(ledger))
    result.rows_without_id = ledger.rows_without_id()
    if not result.fresh:
        result.backfill = reports.backfill(ledger, app.config.routes, app.routes.sinks_for)
    pattern = selection.path_regex()
    regex = re.compile(pattern) if pattern else None
    taken = 0
    for row in reports.plan_rows(ledger):
        if not _selected(row, selection, regex):
            result.not_selected += 1
            continue
        step = _without_looking(row)
        if step is None and selection.limit is not None and taken >= selection.limit:
            step = Step(LATER, row.file_id, row.path, reason=f"not this run: --limit {selection.limit} reached")
        if step is None:
            taken += 1
            step = _inspect(app, row, selection)
        result.steps.append(step)
    return result


def _selected(row: reports.PlanRow, sel: Selection, regex: re.Pattern[str] | None) -> bool:
    if sel.file_ids is not None and row.file_id not in sel.file_ids:
        return False
    if regex is not None and not (row.path and regex.match(row.path)):
        return False
    if sel.since is not None or sel.until is not None:
        taken = _date(row.date_taken)
        if taken is None or (sel.since and taken < sel.since) or (sel.until and taken >= sel.until):
            return False
    return True


def _date(text: str | None) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip()) if text else None
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _without_looking(row: reports.PlanRow) -> Step | None:
    """The rows the ledger decides alone (the run would not claim them); None for those it would claim."""
    if row.duplicates > 1:
        return Step(FAIL, row.file_id, row.path, reason="duplicate id in the app table: parked, not copied")
    changed = row.state is not None and row.ledger_path != row.path
    if row.state is None or changed or (row.state == "done" and not row.copied):
        return None  # new, moved, or its flag reset by the app: enqueued and due at once
    if row.claimed:
        return Step(BUSY, row.file_id, row.path, reason="being copied by another worker right now")
    if row.state == "failed":
        return Step(PARKED, row.file_id, row.path,
                    reason=f"parked: [{row.error_class}] {row.error} (`filesync retry {row.file_id}` to try again)")
    if row.state == "skipped":
        return Step(SKIP, row.file_id, row.path, reason=f"skipped before: {row.error} (looked at again when "
                                                         "FILESYNC_ROUTES changes)")
    if row.state == "pending" and row.due_at is not None and row.due_at > datetime.now(UTC):
        return Step(WAIT, row.file_id, row.path,
                    reason=f"waiting for its retry, due {row.due_at.isoformat(timespec='seconds')} after "
                           f"{row.attempts} attempt(s): [{row.error_class}] {row.error}")
    if row.state == "done":
        return Step(DONE, row.file_id, row.path, reason="done")
    return None


def _inspect(app: App, row: reports.PlanRow, sel: Selection) -> Step:
    """Stat and sniff the object as the run would, route it, and check each destination it would go to."""
    path = row.path
    if not path or not path.strip():
        return Step(FAIL, row.file_id, path, reason="path is empty: parked as invalid")
    try:
        safe_relative(path)
    except UnsafePath:
        return Step(FAIL, row.file_id, path, reason=f"path {path!r} is not a safe object key: parked as invalid")
    try:
        info = app.source.stat(path)
        head = app.source.read_head(path, kinds.HEAD_BYTES) if info.size else b""
    except SourceNotFound as exc:
        return Step(FAIL, row.file_id, path, reason=f"{exc} (parked)")
    except FilesyncError as exc:
        return Step(FAIL, row.file_id, path, reason=f"source: {exc} (retried later)")
    kind, mime = kinds.detect(path, info.content_type, head)
    size = kinds.image_size(head) if kind is Kind.IMAGE else None
    obj = SourceObject(file_id=row.file_id, path=path, size=info.size, mime=mime, kind=kind, etag=info.etag,
                       width=size[0] if size else None, height=size[1] if size else None)
    routed = app.routes.sinks_for(mime)
    if not routed:
        return Step(SKIP, row.file_id, path, reason=f"unsupported type {mime}: no route in FILESYNC_ROUTES")
    moved = row.state is not None and row.ledger_path != row.path
    reset = row.state == "done" and not row.copied
    done = set() if (moved or reset) else set(row.done_sinks)
    wanted = [s for s in routed if s not in done and s not in row.parked_sinks
              and (sel.sink is None or s == sel.sink)]
    problems = [f"{s}: parked: {row.parked_sinks[s]}" for s in routed if s in row.parked_sinks]
    sending = []
    for sink_name in wanted:
        sink = app.sinks[sink_name]
        refusal = accepts(sink.capabilities, obj)
        name = sink.name_of(obj) if refusal is None else None
        owner = reports.name_owner(app.ledger, sink_name, name) if name is not None else None
        if refusal is not None:
            problems.append(f"{sink_name}: {refusal}")
        elif owner is not None and owner != row.file_id:
            problems.append(f"{sink_name}: {name!r} belongs to file {owner}")
        else:
            sending.append(sink_name)
    if sending:
        why = "new" if row.state is None else "moved in the bucket" if moved else "flag reset by the app" if reset \
            else "due"
        note = f"; not sent: {'; '.join(problems)}" if problems else ""
        return Step(COPY, row.file_id, path, tuple(sending), f"{mime}, {info.size} bytes, {why}{note}")
    if problems:
        return Step(FAIL, row.file_id, path, reason="; ".join(problems))
    if sel.sink is not None and sel.sink not in routed:
        return Step(SKIP, row.file_id, path, reason=f"not routed to --sink {sel.sink} ({mime} goes to "
                                                    f"{', '.join(routed)})")
    return Step(DONE, row.file_id, path, reason="every routed destination holds it: only the flag is set")


def lines(result: Plan) -> Iterator[str]:
    """The plan as an operator reads it: one line per file, then the totals."""
    width = max((len(s.file_id) for s in result.steps), default=0)
    for s in result.steps:
        where = f"  -> {', '.join(s.sinks)}" if s.sinks else ""
        yield f"{s.action:<6} {s.file_id:<{width}}  {s.path or '-'}{where}  ({s.reason})"
    if result.fresh:
        yield "no ledger yet: the run would first create filesync's tables"
    if result.not_selected:
        yield f"{result.not_selected} file(s) not selected by --file/--files-from/--path/--since/--until"
    if result.rows_without_id:
        yield f"{result.rows_without_id} row(s) have no id and would not be copied (set their id column)"
    b = result.backfill
    if b is not None and b.changed:
        where = ", ".join(f"{sink} {n}" for sink, n in b.per_sink.items()) or "nothing"
        yield (f"routes changed since the last run: the backfill would send {b.files} already-handled file(s) "
               f"again ({b.skipped_files} skipped until now): {where}")
    counts = ", ".join(f"{result.count(a)} {label}" for a, label in (
        (COPY, "to copy"), (SKIP, "skipped"), (FAIL, "would fail"), (WAIT, "waiting"), (PARKED, "parked"),
        (BUSY, "in progress elsewhere"), (LATER, "left for a later run"), (DONE, "already done")) if result.count(a))
    yield f"dry run: {counts or 'nothing to do'}; nothing was changed"
