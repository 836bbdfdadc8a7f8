"""What a run tells whoever watches it: the terminal display, `run_progress` log events, the status API.

The engine calls these as things happen (from its transfer threads: implementations must be thread-safe
and quick); front ends implement the ones they need. `Observer` is the no-op base; `Observers` fans one
call out to several.
"""

from __future__ import annotations

from collections.abc import Iterable

from filesync.model import RunSummary


class Observer:
    """Every event a run reports, doing nothing; subclass and override what you watch."""

    def run_started(self, summary: RunSummary) -> None:
        """The run enqueued and counted its backlog (`summary.total_files`)."""

    def transfer_started(self, file_id: str, path: str, sink: str, size: int) -> None:
        """Bytes of `path` start towards `sink`."""

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        """`nbytes` more were sent."""

    def transfer_finished(self, file_id: str, sink: str, outcome: str) -> None:
        """copied, existed, failed (parked), not done (retried later) or stopped."""

    def file_finished(self, file_id: str, outcome: str) -> None:
        """copied, skipped, failed, waiting, deferred, released or unrecorded."""

    def request_retried(self, sink: str, error_class: str, wait: float) -> None:
        """A request is sent again after `wait` seconds (rate_limited: the service asked us to slow down)."""

    def destination_stopped(self, sink: str, reason: str) -> None:
        """The destination's circuit opened for the rest of the run."""

    def run_finished(self, summary: RunSummary) -> None:
        """The run is over (the summary is final)."""


class Observers(Observer):
    """Several observers as one; one that raises does not stop the others or the run."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = list(observers)

    def _each(self, name: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, name)(*args)
            except Exception:  # a display must never fail a transfer
                continue

    def run_started(self, summary: RunSummary) -> None:
        self._each("run_started", summary)

    def transfer_started(self, file_id: str, path: str, sink: str, size: int) -> None:
        self._each("transfer_started", file_id, path, sink, size)

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        self._each("transfer_progress", file_id, sink, nbytes)

    def transfer_finished(self, file_id: str, sink: str, outcome: str) -> None:
        self._each("transfer_finished", file_id, sink, outcome)

    def file_finished(self, file_id: str, outcome: str) -> None:
        self._each("file_finished", file_id, outcome)

    def request_retried(self, sink: str, error_class: str, wait: float) -> None:
        self._each("request_retried", sink, error_class, wait)

    def destination_stopped(self, sink: str, reason: str) -> None:
        self._each("destination_stopped", sink, reason)

    def run_finished(self, summary: RunSummary) -> None:
        self._each("run_finished", summary)
