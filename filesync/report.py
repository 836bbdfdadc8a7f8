"""What an operator reads: the one-screen run summary, `filesync status`, and the run's exit code."""

from __future__ import annotations

from filesync.errors import ExitCode
from filesync.ledger import Ledger
from filesync.model import RunSummary
from filesync.redaction import redact

_MAX_LINES = 10


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


def summary_text(summary: RunSummary, ledger: Ledger | None = None, code: int | None = None) -> str:
    s = summary
    lines = [
        f"filesync run {s.run_id}: {s.copied} copied, {s.skipped} skipped, {s.failed} failed, "
        f"{s.retry_later} to retry later, {human_bytes(s.bytes)} sent" + (" (interrupted)" if s.interrupted else ""),
    ]
    if s.rows_without_id:
        lines.append(f"{s.rows_without_id} row(s) have no id and were not copied (set their id column)")
    for name, why in sorted(s.stopped.items()):
        lines.append(f"STOPPED {name}: {why}")
    if s.stopped:
        lines.append(f"  {s.deferred} file(s) left for the next run with no attempt counted; fix the setting "
                     "named above and run again (no `filesync retry` needed)")
    for sink, counts in sorted(s.per_sink.items()):
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        lines.append(f"  {sink:<20} {parts}")
    if s.failures:
        lines.append("failures:")
        lines += [f"  {fid}  [{sink}]  {reason}" for fid, sink, reason in s.failures[:_MAX_LINES]]
        if len(s.failures) > _MAX_LINES:
            lines.append(f"  ... and {len(s.failures) - _MAX_LINES} more (filesync status)")
    if s.skips:
        lines.append("skipped:")
        lines += [f"  {fid}  {reason}" for fid, reason in s.skips[:_MAX_LINES]]
        if len(s.skips) > _MAX_LINES:
            lines.append(f"  ... and {len(s.skips) - _MAX_LINES} more (filesync status)")
    if ledger is not None:
        try:
            lines.append(f"backlog: {ledger.backlog()} file(s) due now")
        except Exception:  # the summary must print even if the database just went away
            pass
    if code is not None:
        lines.append(f"exit code {code}")
    return redact("\n".join(lines))


def status_text(ledger: Ledger, limit: int = 20) -> str:
    counts = ledger.state_counts()
    lines = ["files by state: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")]
    lines.append(f"due now: {ledger.backlog()}")
    without_id = ledger.rows_without_id()
    if without_id:
        lines.append(f"{without_id} row(s) of the app's table have no id: they cannot be copied")
    problems = ledger.problems(limit)
    if problems:
        lines.append("latest problems:")
        for p in problems:
            status = f" HTTP {p.status}" if p.status else ""
            lines.append(f"  {p.file_id}  {p.state} after {p.attempts} attempt(s)  "
                         f"[{p.error_class}{status}] {p.error}")
    return redact("\n".join(lines))
