"""What an operator reads: the run summary, `filesync status`, `runs`, the `report` file, and the exit code.

Texts are built from the ledger's read models (`filesync.ledger.reports`) and redacted on the way out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

from filesync.errors import ExitCode
from filesync.ledger import Ledger, reports
from filesync.model import RunSummary
from filesync.redaction import redact

#: Failures, waiting files and skips the summary lists before pointing to where the rest are.
MAX_LINES = 20


def exit_code(summary: RunSummary) -> int:
    if summary.stopped:
        return ExitCode.STOPPED
    if summary.cut_off:
        return ExitCode.CUT_OFF
    if summary.failed or summary.retry_later:
        return ExitCode.FILES_FAILED
    if summary.interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `3m05s`, `2h03m`: short enough for a progress line."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """A time as the operator's clock shows it, with how far away it is."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    delta = (moment - now).total_seconds()
    rel = "now" if abs(delta) < 1 else f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(-delta)} ago"
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} ({rel})"


def _rest(n: int, where: str) -> str:
    return f"  ... and {n - MAX_LINES} more ({where})"


def summary_text(summary: RunSummary, ledger: Ledger | None = None, code: int | None = None) -> str:
    """The one-screen end of `filesync run`: what happened, how fast, what is wrong, what is left."""
    s = summary
    lines = [
        f"filesync run {s.run_id}: {s.copied} copied, {s.skipped} skipped, {s.failed} failed, "
        f"{s.retry_later} to retry later, {human_bytes(s.bytes)} sent" + (" (interrupted)" if s.interrupted else ""),
    ]
    if s.started_at and s.finished_at:
        seconds = max((s.finished_at - s.started_at).total_seconds(), 1e-3)
        handled = s.copied + s.skipped + s.failed + s.retry_later
        lines.append(f"  in {human_duration(seconds)}: {handled / seconds:.2f} files/s, "
                     f"{s.bytes / seconds / 1e6:.2f} MB/s; {s.retries} request(s) retried"
                     + (f", {s.retry_passes} end-of-run retry pass(es)" if s.retry_passes else ""))
    if s.cut_off:
        lines.append(f"CUT OFF: {s.cut_off}; in-flight transfers finished, the rest is left for the next run")
    if s.rows_without_id:
        lines.append(f"{s.rows_without_id} row(s) have no id and were not copied (set their id column)")
    for name, why in sorted(s.stopped.items()):
        lines.append(f"STOPPED {name}: {why}")
    if s.stopped:
        lines.append(f"  {s.deferred} file(s) left for the next run with no attempt counted; fix the setting "
                     "named above and run again (no `filesync retry` needed)")
    if s.per_sink:
        lines.append("per destination:")
    for sink, counts in sorted(s.per_sink.items()):
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        lines.append(f"  {sink:<20} {parts}")
    if s.failures:
        lines.append(f"failures ({len(s.failures)}):")
        for fid, sink, reason in s.failures[:MAX_LINES]:
            state = "waiting" if fid in s.waiting else "failed"
            lines.append(f"  {fid}  {s.paths.get(fid) or '-'}  [{sink}]  {state}: {reason}")
        if len(s.failures) > MAX_LINES:
            lines.append(_rest(len(s.failures), "filesync report --csv --state failed; filesync status"))
    if s.waiting:
        lines.append(f"waiting for a later retry ({len(s.waiting)}):")
        for fid, due in sorted(s.waiting.items(), key=lambda kv: kv[1])[:MAX_LINES]:
            lines.append(f"  {fid}  {s.paths.get(fid) or '-'}  due {when(due)}")
        if len(s.waiting) > MAX_LINES:
            lines.append(_rest(len(s.waiting), "filesync report --csv --state waiting"))
    if s.skips:
        lines.append(f"skipped, as expected ({len(s.skips)}: no route for their type, not a problem):")
        lines += [f"  {fid}  {s.paths.get(fid) or '-'}  {reason}" for fid, reason in s.skips[:MAX_LINES]]
        if len(s.skips) > MAX_LINES:
            lines.append(_rest(len(s.skips), "filesync report --csv --state skipped"))
    if ledger is not None:
        try:
            lines.append(_backlog_line(ledger))
        except Exception:  # the summary must print even if the database just went away
            pass
    if code is not None:
        lines.append(f"exit code {code}")
    return redact("\n".join(lines))


def _backlog_line(ledger: Ledger) -> str:
    try:
        snap = reports.status(ledger, runs=0, errors=0, problems=0)
    except TypeError:  # not the PostgreSQL ledger: what the contract offers
        return f"backlog: {ledger.backlog()} file(s) due now"
    line = f"backlog: {snap.due_now} file(s) due now, {snap.waiting} waiting for a retry"
    if snap.next_retry is not None:
        line += f" (next due {when(snap.next_retry.due_at)})"
    return line


# --- filesync status -----------------------------------------------------------------------------------------


_LABELS = {"pending": "due now", "in_progress": "in progress", "waiting": "waiting to retry", "done": "done",
           "skipped": "skipped", "failed": "failed"}


def status_text(snap: reports.StatusSnapshot) -> str:
    now = snap.generated_at
    lines = ["files: " + ", ".join(f"{snap.files.get(k, 0)} {_LABELS[k]}" for k in reports.STATES)]
    lines.append(f"due now: {snap.due_now}")
    if snap.destinations:
        lines.append("by destination:")
        width = max(len(k) for k in [*snap.destinations, "(no transfer yet)"])
        lines.append(f"  {'':<{width}}  " + "  ".join(f"{_LABELS[k]:>{len(_LABELS[k])}}" for k in reports.STATES))
        for sink, counts in sorted(snap.destinations.items(), key=lambda kv: (kv[0] == reports.NO_DESTINATION,
                                                                               kv[0])):
            name = "(no transfer yet)" if sink == reports.NO_DESTINATION else sink
            lines.append(f"  {name:<{width}}  " + "  ".join(
                f"{counts.get(k, 0):>{len(_LABELS[k])}}" for k in reports.STATES))
    if snap.oldest_due is not None:
        o = snap.oldest_due
        lines.append(f"oldest due: {o.file_id}  {o.path or '-'}  due since {when(o.due_at, now)}")
    if snap.next_retry is not None:
        n = snap.next_retry
        lines.append(f"next retry: {n.file_id}  {n.path or '-'}  due {when(n.due_at, now)} "
                     f"(attempt {n.attempts + 1})")
    if snap.rows_without_id:
        lines.append(f"{snap.rows_without_id} row(s) of the app's table have no id: they cannot be copied")
    b = snap.backfill
    if b is not None and b.changed:
        where = ", ".join(f"{sink} {n}" for sink, n in b.per_sink.items()) or "nothing to send"
        lines.append(f"routes changed since the last run: the next run's backfill sends {b.files} already-handled "
                     f"file(s) ({b.skipped_files} of them skipped until now): {where}")
    if snap.runs:
        lines.append("last runs:")
        lines += [f"  {run_line(r)}" for r in snap.runs]
    if snap.errors:
        lines.append("most common errors now:")
        for e in snap.errors:
            status = f" HTTP {e.status}" if e.status else ""
            lines.append(f"  {e.count:>5}x  [{e.error_class}{status}] {e.error}  (e.g. {e.example_id})")
    if snap.problems:
        lines.append("latest problems:")
        for p in snap.problems:
            status = f" HTTP {p.status}" if p.status else ""
            due = f"  due {when(p.due_at, now)}" if p.state == "waiting" else ""
            lines.append(f"  {p.file_id}  {p.state} after {p.attempts} attempt(s)  "
                         f"[{p.error_class}{status}] {p.error}  ({p.path or '-'}){due}")
    return redact("\n".join(lines))


def run_line(r: reports.RunRecord) -> str:
    duration = "-" if r.duration is None else human_duration(r.duration)
    started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return (f"#{r.id:<5} {started}  {duration:>7}  {r.status:<11} {r.copied} copied, {r.skipped} skipped, "
            f"{r.failed} failed, {r.retry_later} to retry, {human_bytes(r.bytes)}  {r.worker}")


def runs_text(records: list[reports.RunRecord]) -> str:
    if not records:
        return "no runs recorded yet"
    head = (f"{'run':<6} {'started':<19}  {'duration':>8}  {'status':<11} {'copied':>6} {'skipped':>7} "
            f"{'failed':>6} {'retry':>5} {'bytes':>10}  worker")
    lines = [head]
    for r in records:
        duration = "-" if r.duration is None else human_duration(r.duration)
        started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{r.id:<6} {started:<19}  {duration:>8}  {r.status:<11} {r.copied:>6} {r.skipped:>7} "
                     f"{r.failed:>6} {r.retry_later:>5} {human_bytes(r.bytes):>10}  {r.worker}")
        if r.error and r.status in ("error", "abandoned"):
            lines.append(f"{'':<6} {r.error}")
    return redact("\n".join(lines))


# --- filesync report --------------------------------------------------------------------------------------


def write_csv(rows: Iterable[reports.ReportRow], out: IO[str]) -> int:
    """Rows as CSV (a header, then one line per file and destination); how many. Streams: one row at a time."""
    writer = csv.writer(out)
    writer.writerow(reports.ReportRow.FIELDS)
    n = 0
    for row in rows:
        values = row.as_dict()
        writer.writerow([redact(str(v)) if isinstance(v, str) else ("" if v is None else v)
                         for v in (values[k] for k in reports.ReportRow.FIELDS)])
        n += 1
    return n


def write_json_lines(rows: Iterable[reports.ReportRow], out: IO[str]) -> int:
    n = 0
    for row in rows:
        out.write(redact(json.dumps(row.as_dict(), ensure_ascii=False)) + "\n")
        n += 1
    return n
