"""The run going on in this daemon, as it happens: the Observer behind `GET /api/runs/{id}`'s `progress`.

The ledger's runs table says a run is `running` and holds its counts only once it ends; files and bytes
done so far, the rate and the time left exist only in the process doing the work, so the daemon passes
this observer to every run and the API reads a snapshot of it. The figures are counted by `RunStats`, the
same counter behind the terminal display and the `run_progress` events: one set of rules for all three.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from filesync.model import RunSummary
from filesync.observer import Observer
from filesync.stats import RunStats

MAX_IN_FLIGHT_SHOWN = 50


class LiveRun(Observer):
    """The current run's `RunStats` (None between runs) and its figures under the API's stable names;
    thread-safe and quick, as an Observer must be (the transfer threads call it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: RunStats | None = None
        self._run_id: int | None = None
        self._started_at: str | None = None

    # --- what the run reports ------------------------------------------------------------------------
    def run_started(self, summary: RunSummary) -> None:
        stats = RunStats(clock=self._clock)
        stats.run_started(summary)
        with self._lock:
            self._stats, self._run_id = stats, summary.run_id
            self._started_at = summary.started_at.isoformat() if summary.started_at else None

    def _current(self) -> RunStats | None:
        with self._lock:
            return self._stats

    def transfer_started(self, file_id: str, path: str, sink: str, size: int) -> None:
        if (stats := self._current()) is not None:
            stats.transfer_started(file_id, path, sink, size)

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        if (stats := self._current()) is not None:
            stats.transfer_progress(file_id, sink, nbytes)

    def transfer_finished(self, file_id: str, sink: str, outcome: str) -> None:
        if (stats := self._current()) is not None:
            stats.transfer_finished(file_id, sink, outcome)

    def file_finished(self, file_id: str, outcome: str) -> None:
        if (stats := self._current()) is not None:
            stats.file_finished(file_id, outcome)

    def destination_stopped(self, sink: str, reason: str) -> None:
        if (stats := self._current()) is not None:
            stats.destination_stopped(sink, reason)

    def run_finished(self, summary: RunSummary) -> None:
        with self._lock:
            self._stats = None  # the runs table has the final counts from here on

    # --- what the API reads --------------------------------------------------------------------------
    @property
    def run_id(self) -> int | None:
        with self._lock:
            return self._run_id if self._stats is not None else None

    def snapshot(self) -> dict[str, Any] | None:
        """The current run's progress (stable field names), or None when no run is going."""
        with self._lock:
            stats, run_id, started_at = self._stats, self._run_id, self._started_at
        if stats is None:
            return None
        p = stats.snapshot()
        return {
            "run_id": run_id,
            "started_at": started_at,
            "elapsed_seconds": round(p.elapsed, 3),
            "files_total": p.files_total,
            "files_done": p.files_done,
            "outcomes": p.outcomes,
            "bytes_done": p.bytes_sent,
            "bytes_total": p.bytes_total,
            "bytes_total_estimated": p.bytes_total_estimated,
            "files_per_second": round(p.files_per_second, 3),
            "bytes_per_second": round(p.bytes_per_second, 1),
            "eta_seconds": None if p.eta is None else round(p.eta, 1),
            "in_flight": [{"file_id": t.file_id, "path": t.path, "sink": t.sink, "size": t.size, "sent": t.sent}
                          for t in p.in_flight[:MAX_IN_FLIGHT_SHOWN]],
            "stopped": p.stopped,
        }
