"""The run going on in this daemon, as it happens: the Observer behind `GET /api/runs/{id}`'s `progress`.

The ledger's runs table says a run is `running` and holds its counts only once it ends; files and bytes
done so far, the rate and the time left exist only in the process doing the work, so the daemon passes
this observer to every run and the API reads a snapshot of it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from filesync.model import RunSummary
from filesync.observer import Observer

MAX_IN_FLIGHT_SHOWN = 50


@dataclass
class _Transfer:
    file_id: str
    path: str
    sink: str
    size: int
    sent: int = 0


@dataclass
class _Run:
    run_id: int | None
    started_at: str | None
    started: float
    files_total: int
    finished: dict[str, str] = field(default_factory=dict)  # file id -> its latest outcome in this run
    bytes_done: int = 0
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, sink) -> bytes, once started
    in_flight: dict[tuple[str, str], _Transfer] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)


class LiveRun(Observer):
    """Files and bytes done of the total, the rate and the ETA of the current run; thread-safe and quick,
    as an Observer must be (the transfer threads call it)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._run: _Run | None = None

    # --- what the run reports ------------------------------------------------------------------------
    def run_started(self, summary: RunSummary) -> None:
        with self._lock:
            self._run = _Run(summary.run_id, summary.started_at.isoformat() if summary.started_at else None,
                             self._clock(), summary.total_files)

    def transfer_started(self, file_id: str, path: str, sink: str, size: int) -> None:
        with self._lock:
            if self._run is not None:
                self._run.sizes[(file_id, sink)] = size
                self._run.in_flight[(file_id, sink)] = _Transfer(file_id, path, sink, size)

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        with self._lock:
            if self._run is not None:
                self._run.bytes_done += nbytes
                transfer = self._run.in_flight.get((file_id, sink))
                if transfer is not None:
                    transfer.sent += nbytes

    def transfer_finished(self, file_id: str, sink: str, outcome: str) -> None:
        with self._lock:
            if self._run is not None:
                self._run.in_flight.pop((file_id, sink), None)

    def file_finished(self, file_id: str, outcome: str) -> None:
        with self._lock:
            if self._run is not None:
                self._run.finished[file_id] = outcome

    def destination_stopped(self, sink: str, reason: str) -> None:
        with self._lock:
            if self._run is not None:
                self._run.stopped[sink] = reason

    def run_finished(self, summary: RunSummary) -> None:
        with self._lock:
            self._run = None  # the runs table has the final counts from here on

    # --- what the API reads --------------------------------------------------------------------------
    @property
    def run_id(self) -> int | None:
        with self._lock:
            return self._run.run_id if self._run is not None else None

    def snapshot(self) -> dict[str, Any] | None:
        """The current run's progress (stable field names), or None when no run is going."""
        with self._lock:
            run = self._run
            if run is None:
                return None
            elapsed = max(self._clock() - run.started, 1e-9)
            files_done = len(run.finished)
            outcomes: dict[str, int] = {}
            for outcome in run.finished.values():
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            in_flight = [
                {"file_id": t.file_id, "path": t.path, "sink": t.sink, "size": t.size, "sent": t.sent}
                for t in list(run.in_flight.values())[:MAX_IN_FLIGHT_SHOWN]
            ]
            files_total = max(run.files_total, files_done)
            started_files = {file_id for file_id, _ in run.sizes}
            known = sum(run.sizes.values())
            unseen = max(files_total - len(started_files), 0)
            # Sizes are known once a file is opened: the rest is estimated at the mean size seen so far.
            bytes_total = known + round(known / len(started_files) * unseen) if started_files else None
            bytes_done, stopped, run_id, started_at = run.bytes_done, dict(run.stopped), run.run_id, run.started_at
        files_rate = files_done / elapsed
        bytes_rate = bytes_done / elapsed
        eta: float | None
        if files_done >= files_total:
            eta = 0.0
        elif bytes_total is not None and bytes_rate > 0:
            eta = max(bytes_total - bytes_done, 0) / bytes_rate
        elif files_rate > 0:
            eta = (files_total - files_done) / files_rate
        else:
            eta = None
        return {
            "run_id": run_id,
            "started_at": started_at,
            "elapsed_seconds": round(elapsed, 3),
            "files_total": files_total,
            "files_done": files_done,
            "outcomes": outcomes,
            "bytes_done": bytes_done,
            "bytes_total": bytes_total,
            "bytes_total_estimated": bytes_total is not None and unseen > 0,
            "files_per_second": round(files_rate, 3),
            "bytes_per_second": round(bytes_rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "in_flight": in_flight,
            "stopped": stopped,
        }
