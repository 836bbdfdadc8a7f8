"""The live display of `filesync run` at a terminal (rich), drawn from `stats.RunStats`.

It shows what rclone's progress shows and what only the ledger knows: files done of the total, bytes done of
the (estimated) total, files/s and MB/s, ETA, counts per destination, retries, failures and waiting files,
each file in flight with its destination and percent, and a note while a destination is rate-limited or
stopped. Warnings print above it, one line each, cut to the terminal's width.

Drawing happens in rich's refresh thread a few times a second; the engine's calls only count (RunStats),
so the display does not slow transfers (bench/console.py measures it).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from filesync.observer import Observers
from filesync.redaction import redact
from filesync.report import human_bytes, human_duration
from filesync.stats import Progress, RunStats

#: Files in flight listed under the bar; more are summed up on one line.
SHOWN_IN_FLIGHT = 8
#: Fields of a warning's event shown on its line, in this order; the rest stay in the log file.
_WARNING_FIELDS = ("sink", "file_id", "path", "error_class", "status", "error", "reason", "hint")


class ProgressDisplay(Observers):
    """The terminal display: an observer (it counts through its RunStats) and a context manager (it draws
    while entered). `file` is the terminal (stderr by default); tests and the benchmark pass their own."""

    def __init__(self, stats: RunStats | None = None, *, file: IO[str] | None = None,
                 console: Console | None = None, refresh_per_second: float = 4) -> None:
        self.stats = stats or RunStats()
        super().__init__([self.stats])
        self.console = console or Console(file=file, stderr=file is None)
        self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=refresh_per_second,
                          transient=True, redirect_stdout=True, redirect_stderr=True)
        self._warnings = _WarningLines(self.console)

    # --- drawing -----------------------------------------------------------------------------------
    def _render(self) -> RenderableType:
        try:
            return render(self.stats.snapshot(), self.console.width)
        except Exception as exc:  # never let a drawing bug take the run down
            return Text(f"filesync: progress unavailable ({type(exc).__name__})")

    def __enter__(self) -> ProgressDisplay:
        logging.getLogger().addHandler(self._warnings)
        self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._live.stop()
        logging.getLogger().removeHandler(self._warnings)


def render(p: Progress, width: int = 100) -> RenderableType:
    """The display for one snapshot (a pure function of it, so tests can look at it)."""
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text("filesync", style="bold"),
        ProgressBar(total=max(p.files_total, 1), completed=p.files_done, width=max(10, min(40, width // 4))),
        Text(f"{p.files_done}/{p.files_total} files"),
        Text(_bytes_line(p)),
    )
    eta = "ETA -" if p.eta is None else f"ETA {human_duration(p.eta)}"
    rates = Text(f"  {p.files_per_second:.1f} files/s  {p.bytes_per_second / 1e6:.2f} MB/s  {eta}  "
                 f"elapsed {human_duration(p.elapsed)}")
    counts = Text("  " + "  ".join(filter(None, [
        f"retries {p.retries}", f"failed {p.failures}", f"waiting {p.waiting}" if p.waiting else "",
        f"skipped {p.outcomes['skipped']}" if p.outcomes.get("skipped") else "",
    ])))
    lines: list[RenderableType] = [head, rates, counts]
    for sink, outcomes in p.per_sink.items():
        lines.append(Text(f"  {sink}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())),
                          overflow="ellipsis", no_wrap=True))
    for sink, left in sorted(p.rate_limited.items()):
        wait = f"waiting {left:.0f} s" if left >= 1 else "slowed down"
        lines.append(Text(f"  ! {sink}: rate-limited by the service, {wait}", style="yellow"))
    for sink, why in sorted(p.stopped.items()):
        lines.append(Text(redact(f"  STOPPED {sink}: {why}"), style="bold red", overflow="ellipsis", no_wrap=True))
    for t in p.in_flight[:SHOWN_IN_FLIGHT]:
        pct = "   ?%" if t.percent is None else f"{t.percent:4.0f}%"
        lines.append(Text(redact(f"  {pct}  {t.name}  -> {t.sink}  ({human_bytes(t.size)})"),
                          overflow="ellipsis", no_wrap=True))
    if len(p.in_flight) > SHOWN_IN_FLIGHT:
        lines.append(Text(f"  ... and {len(p.in_flight) - SHOWN_IN_FLIGHT} more in flight"))
    return Group(*lines)


def _bytes_line(p: Progress) -> str:
    if p.bytes_total:
        return f"{human_bytes(p.bytes_sent)} of ~{human_bytes(p.bytes_total)}"
    return human_bytes(p.bytes_sent)


class _WarningLines(logging.Handler):
    """Warnings and errors as one line each above the display (not wrapped key=value dumps); the log file
    keeps every field. The CLI raises the console's own log threshold while the display is up."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = warning_line(record)
            self.console.print(Text(line, style="red" if record.levelno >= logging.ERROR else "yellow"),
                               overflow="ellipsis", no_wrap=True, crop=True, soft_wrap=False)
        except Exception:
            self.handleError(record)


def warning_line(record: logging.LogRecord) -> str:
    """`warning: upload failed · bunny · clip · server · 503 · injected 503`: the event and what says why."""
    level = record.levelname.lower()
    event: Any = record.msg
    if isinstance(event, dict):
        name = str(event.get("event", "")).replace("_", " ")
        parts = [str(event[k]) for k in _WARNING_FIELDS if event.get(k) not in (None, "")]
        text = " · ".join([name, *parts])
    else:
        text = record.getMessage()
    return redact(f"{level}: {' '.join(text.split())}")
