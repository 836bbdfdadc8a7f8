"""The one place an outcome is recorded: the ledger, the run summary, the metrics and the log together.

Every way a file or a transfer can end in a run goes through one method here, so the four views of a
run cannot disagree (an upload that already existed is `existed` in the summary, the metrics and the
log alike). The ledger write comes first: if it fails, nothing else claims the outcome happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from filesync import metrics
from filesync.errors import classify
from filesync.ledger import Ledger
from filesync.model import FileTask, RemoteObject, RunSummary, SourceObject
from filesync.observer import Observer
from filesync.redaction import redact
from filesync.retry import Action, Decision

log = structlog.get_logger("filesync")


@dataclass
class Outcomes:
    ledger: Ledger
    worker: str
    summary: RunSummary = field(default_factory=RunSummary)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: files that failed transiently in this run (their attempt is counted): the end-of-run pass retries them
    later: set[str] = field(default_factory=set)
    observer: Observer = field(default_factory=Observer)

    # --- transfers (one file, one destination) -----------------------------------------------------
    def transfer_done(self, task: FileTask, obj: SourceObject, sink: str, remote: RemoteObject,
                      routed: Sequence[str], started: float, derivation: Mapping[str, Any] | None = None) -> bool:
        """A confirmed copy (of `obj`: what was sent, derived or not). True when every routed destination now
        holds the file (flag set)."""
        complete = self.ledger.record_done(self.worker, task.file_id, sink, remote, routed, path=task.path,
                                           derivation=derivation)
        outcome = "existed" if remote.existed else "copied"
        sent = 0 if remote.existed else obj.size
        with self._lock:
            self.summary.bytes += sent
            self.summary.count(sink, outcome)
        metrics.files_total.labels(sink=sink, outcome=outcome).inc()
        metrics.bytes_total.labels(sink=sink).inc(sent)
        log.info("upload_finished", sink=sink, status=outcome, bytes=obj.size, remote_id=remote.remote_id,
                 url=remote.url, duration_ms=int((time.monotonic() - started) * 1000))
        self.observer.transfer_finished(task.file_id, sink, outcome)
        return complete

    def transfer_failed(self, task: FileTask, sink: str, error: BaseException, decision: Decision) -> None:
        """One destination failed this file; a permanent error parks that transfer only."""
        reason = redact(str(error))
        if decision.action is not Action.STOP:
            self.ledger.record_transfer_failure(
                self.worker, task.file_id, sink, str(decision.error_class), decision.status, reason,
                permanent=decision.permanent,
            )
        with self._lock:
            self.summary.count(sink, "failed" if decision.permanent else "not done")
        self.observer.transfer_finished(
            task.file_id, sink, "stopped" if decision.action is Action.STOP else
            "failed" if decision.permanent else "not done")
        log.warning("upload_failed", sink=sink, error_class=str(decision.error_class), status=decision.status,
                    error=reason, attempt=task.attempts + 1, decision=str(decision.action))

    # --- files -------------------------------------------------------------------------------------
    def file_complete(self, task: FileTask) -> None:
        with self._lock:
            self.summary.copied += 1
            if task.file_id in self.later:  # copied by the end-of-run pass: no longer waiting
                self.later.discard(task.file_id)
                self.summary.retry_later -= 1
                self.summary.waiting.pop(task.file_id, None)
                self.summary.failures = [f for f in self.summary.failures if f[0] != task.file_id]
        self.observer.file_finished(task.file_id, "copied")

    def retried(self, sink: str, error: BaseException, wait: float) -> None:
        """One request is sent again within the run."""
        with self._lock:
            self.summary.retries += 1
        self.observer.request_retried(sink, str(classify(error)[0]), wait)

    def file_skipped(self, task: FileTask, obj: SourceObject, reason: str) -> None:
        self.ledger.record_skipped(self.worker, task.file_id, reason)
        with self._lock:
            self.summary.skipped += 1
            self.summary.skips.append((task.file_id, reason))
            self.summary.paths[task.file_id] = obj.path
        metrics.files_total.labels(sink="-", outcome="skipped").inc()
        log.info("file_skipped", path=obj.path, mime=obj.mime, reason=reason)
        self.observer.file_finished(task.file_id, "skipped")

    def file_failed(self, task: FileTask, sink: str | None, error: BaseException, decision: Decision) -> str:
        """The file is not done in this run: due again later, or parked. Returns the new state. A file
        already counted this run (the end-of-run pass) keeps one attempt and one line in the summary."""
        reason = redact(str(error))
        again = task.file_id in self.later
        state, attempts = self.ledger.record_failure(
            self.worker, task.file_id, error_class=str(decision.error_class), status=decision.status,
            error=reason, park=decision.action is Action.PARK, retry_in=decision.delay, count=not again,
        )
        with self._lock:
            self.summary.failures = [f for f in self.summary.failures if f[0] != task.file_id]
            self.summary.failures.append((task.file_id, sink or "-", reason))
            self.summary.paths[task.file_id] = task.path or ""
            if state == "failed":
                self.summary.failed += 1
                self.summary.retry_later -= 1 if again else 0
                self.later.discard(task.file_id)
                self.summary.waiting.pop(task.file_id, None)
            else:
                self.summary.retry_later += 0 if again else 1
                self.later.add(task.file_id)
                self.summary.waiting[task.file_id] = datetime.now(UTC) + timedelta(seconds=decision.delay)
        metrics.files_total.labels(sink=sink or "-", outcome="failed" if state == "failed" else "retry").inc()
        self.observer.file_finished(task.file_id, "failed" if state == "failed" else "waiting")
        log.warning("file_failed", state=state, attempt=attempts, error_class=str(decision.error_class),
                    status=decision.status, error=reason, **({"sink": sink} if sink else {}))
        return state

    def file_released(self, task: FileTask, reason: str) -> None:
        """Handed back unmarked and uncounted by a shutdown: any worker may take it at once."""
        self.ledger.release(self.worker, [task.file_id])
        with self._lock:
            self.summary.interrupted = True
        metrics.files_total.labels(sink="-", outcome="released").inc()
        log.warning("file_released", reason=reason)
        self.observer.file_finished(task.file_id, "released")

    def file_deferred(self, task: FileTask, reason: str) -> None:
        """Handed back uncounted for the next run (a destination is stopped for this one)."""
        assert self.summary.run_id is not None
        self.ledger.defer(self.worker, task.file_id, self.summary.run_id)
        with self._lock:
            self.summary.deferred += 1
        metrics.files_total.labels(sink="-", outcome="deferred").inc()
        log.info("file_deferred", reason=reason)
        self.observer.file_finished(task.file_id, "deferred")

    def unrecorded(self, task: FileTask, error: BaseException) -> None:
        """The outcome could not be written (database gone): the file stays unmarked, looked at again."""
        with self._lock:
            self.summary.retry_later += 1
        log.error("ledger_unavailable", error=redact(str(error)))
        self.observer.file_finished(task.file_id, "unrecorded")

    def destination_stopped(self, sink: str, error: BaseException) -> bool:
        """Open the circuit of `sink` for this run; True the first time (the caller says it once)."""
        with self._lock:
            if sink in self.summary.stopped:
                return False
            self.summary.stopped[sink] = redact(str(error))
        metrics.files_total.labels(sink=sink, outcome="stopped").inc()
        self.observer.destination_stopped(sink, self.summary.stopped[sink])
        log.error("destination_stopped", sink=sink, error=redact(str(error)),
                  hint="no attempt is counted against the files; the next run tries again")
        return True
