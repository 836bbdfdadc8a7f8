"""One run: enqueue new rows, claim due files in small batches, stream each to its sinks, record outcomes.

Threads, not processes: the work is network-bound and every client used here is synchronous. Each
transfer re-opens its source stream, so a retry or a resumed upload never depends on bytes in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from filesync import kinds, metrics, retrying
from filesync.app import App
from filesync.errors import (
    ErrorClass,
    FilesyncError,
    LeaseLost,
    LedgerUnavailable,
    PermanentError,
    SourceError,
    SourceNotFound,
    classify,
)
from filesync.ledger import claim_token, host_prefix
from filesync.model import FileTask, Kind, RemoteObject, RunSummary, SourceObject
from filesync.sinks import Sink, accepts
from filesync.sinks.naming import safe_relative
from filesync.sources.reader import open_seekable

log = structlog.get_logger("filesync")


class Cancelled(Exception):
    """The transfer was cancelled by a shutdown; its file is handed back, not failed."""


class _InvalidRow(Exception):
    """The app's row cannot be processed as it is (empty path, bad date)."""


@dataclass
class TransferSession:
    """The UploadSession the pipeline gives a sink: resume tokens go to the ledger at once."""

    pipeline: Pipeline
    file_id: str
    sink: str
    token: str | None
    sent: int = 0

    @property
    def resume_token(self) -> str | None:
        return self.token

    def save_resume_token(self, token: str | None) -> None:
        self.pipeline.app.ledger.save_resume_token(self.pipeline.worker, self.file_id, self.sink, token)
        self.token = token

    def progress(self, nbytes: int) -> None:
        self.sent += nbytes
        self.pipeline.touch(self.file_id)
        self.pipeline.on_bytes(nbytes)
        if self.pipeline.abort.is_set():
            raise Cancelled(f"{self.sink}: transfer of {self.file_id} cancelled by shutdown")


@dataclass
class Pipeline:
    app: App
    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    on_file: Callable[[], None] = lambda: None
    on_bytes: Callable[[int], None] = lambda n: None
    on_backlog: Callable[[int], None] = lambda n: None

    def __post_init__(self) -> None:
        self.config = self.app.config
        self.worker = claim_token(self.config.worker_id)
        self.summary = RunSummary()
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}  # file id -> last sign of life (monotonic)
        self._finished = threading.Event()

    # --- the run --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        ledger = self.app.ledger
        ledger.migrate()
        self.app.source.check()
        run_id = ledger.start_run(self.worker)
        self.summary.run_id = run_id
        structlog.contextvars.bind_contextvars(run_id=run_id)
        started = time.monotonic()
        status, error = "ok", None
        try:
            released = ledger.release_dead_on_host(host_prefix(self.config.worker_id), self.worker)
            added = ledger.enqueue()
            requeued = ledger.requeue_for_routes(self.config.routes, self.app.routes.sinks_for)
            backlog = ledger.backlog()
            self.on_backlog(backlog)
            log.info("run_started", worker=self.worker, enqueued=added, requeued=requeued,
                     released_stale_claims=released, backlog=backlog)
            self._work()
            if self.summary.failed or self.summary.retry_later:
                status = "failed"
            if self.summary.interrupted:
                status = "interrupted"
        except BaseException as exc:
            status, error = "error", str(exc)
            raise
        finally:
            with contextlib.suppress(FilesyncError):
                ledger.release(self.worker)
            duration = time.monotonic() - started
            metrics.run_duration_seconds.observe(duration)
            metrics.runs_total.labels(result=status).inc()
            if status in ("ok", "failed"):
                metrics.last_success_timestamp.set(time.time())
            with contextlib.suppress(FilesyncError):
                ledger.finish_run(run_id, self.summary, status, error)
                metrics.backlog.set(ledger.backlog())
            s = self.summary
            log.info("run_finished", status=status, copied=s.copied, skipped=s.skipped, failed=s.failed,
                     retry_later=s.retry_later, bytes=s.bytes, duration_ms=int(duration * 1000))
            structlog.contextvars.unbind_contextvars("run_id")
        return self.summary

    def _work(self) -> None:
        cfg = self.config
        claimed_total = 0
        futures: dict[Future[None], str] = {}
        beat = threading.Thread(target=self._heartbeat, name="filesync-heartbeat", daemon=True)
        beat.start()
        pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="filesync-transfer")
        try:
            while True:
                free = cfg.concurrency - len(futures)
                room = cfg.max_files - claimed_total if cfg.max_files else free
                if free > 0 and room > 0 and not self.stop.is_set():
                    with self._lock:
                        busy = list(self._in_flight)
                    for task in self.app.ledger.claim(self.worker, min(free, room, cfg.claim_batch),
                                                      cfg.lease_seconds, busy):
                        claimed_total += 1
                        self.touch(task.file_id)
                        # Worker threads do not inherit context variables: carry run_id along.
                        ctx = contextvars.copy_context()
                        futures[pool.submit(ctx.run, self._run_task, task)] = task.file_id
                if not futures:
                    break
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    file_id = futures.pop(future)
                    with self._lock:
                        self._in_flight.pop(file_id, None)
                    future.result()
            if self.stop.is_set():
                self.summary.interrupted = True
        finally:
            self._finished.set()
            pool.shutdown(wait=not self.abort.is_set(), cancel_futures=True)

    def touch(self, file_id: str) -> None:
        """A sign of life from a transfer: its lease is renewed while these keep coming."""
        with self._lock:
            self._in_flight[file_id] = time.monotonic()

    def _heartbeat(self) -> None:
        """Renew the leases of transfers that showed life within a lease period. A transfer stuck
        without progress lets its lease lapse, so another worker can take the file over (and this
        one's late result is refused by the ledger)."""
        interval = max(1.0, self.config.lease_seconds / 3)
        while not self._finished.wait(interval):
            cutoff = time.monotonic() - self.config.lease_seconds
            with self._lock:
                ids = [fid for fid, seen in self._in_flight.items() if seen >= cutoff]
                stalled = len(self._in_flight) - len(ids)
            if stalled:
                log.warning("transfers_stalled", count=stalled, lease_seconds=self.config.lease_seconds)
            try:
                self.app.ledger.heartbeat(self.worker, ids, self.config.lease_seconds)
            except FilesyncError as exc:
                log.warning("heartbeat_failed", error=str(exc))

    # --- one file -------------------------------------------------------------------------------
    def _run_task(self, task: FileTask) -> None:
        with structlog.contextvars.bound_contextvars(file_id=task.file_id):
            try:
                self._process(task)
            except Cancelled:
                self.summary.interrupted = True
                with contextlib.suppress(FilesyncError):
                    self.app.ledger.release(self.worker, [task.file_id])
                log.warning("file_released", reason="shutdown")
            except LeaseLost as exc:
                log.warning("lease_lost", error=str(exc))
            except LedgerUnavailable as exc:
                # The outcome could not be recorded: the file stays unmarked and is looked at again.
                log.error("ledger_unavailable", error=str(exc))
                with self._lock:
                    self.summary.retry_later += 1
            except Exception as exc:  # a bug must not stop the run: count it on the file
                log.exception("file_crashed", error=str(exc))
                self._fail(task, None, exc)
            finally:
                self.on_file()

    def _process(self, task: FileTask) -> None:
        log.debug("file_claimed", path=task.path, attempt=task.attempts + 1)
        try:
            obj = self._inspect(task)
        except (_InvalidRow, SourceError) as exc:
            self._fail(task, None, exc)
            return
        routed = self.app.routes.sinks_for(obj.mime)
        if not routed:
            reason = f"unsupported type {obj.mime}"
            self.app.ledger.record_skipped(self.worker, task.file_id, reason)
            with self._lock:
                self.summary.skipped += 1
                self.summary.skips.append((task.file_id, reason))
            metrics.files_total.labels(sink="-", outcome="skipped").inc()
            log.info("file_skipped", path=obj.path, mime=obj.mime, reason=reason)
            return
        errors: list[tuple[str, BaseException]] = []
        complete = transferred = False
        for sink_name in routed:
            if sink_name in task.done_sinks:
                continue
            transferred = True
            try:
                complete = self._transfer(task, obj, sink_name, routed)
            except (Cancelled, LeaseLost, LedgerUnavailable):
                raise
            except Exception as exc:
                errors.append((sink_name, exc))
        if errors:
            last_sink, last_error = errors[-1]
            permanent = any(_is_permanent(e) for _, e in errors)
            self._fail(task, last_sink, last_error, permanent=permanent)
        elif not complete:
            complete = self.app.ledger.mark_complete(self.worker, task.file_id, routed)
        if complete and transferred:  # a file whose transfers were all done earlier is only re-marked
            with self._lock:
                self.summary.copied += 1

    def _inspect(self, task: FileTask) -> SourceObject:
        if not task.path or not task.path.strip():
            raise _InvalidRow("path is empty")
        try:
            safe_relative(task.path, sink="source")
        except PermanentError:
            raise _InvalidRow(f"path {task.path!r} is not a safe object key") from None
        date_taken = _parse_date(task.date_taken)
        info = self.app.source.stat(task.path)
        head = self.app.source.read_head(task.path, kinds.HEAD_BYTES) if info.size else b""
        kind, mime = kinds.detect(task.path, info.content_type, head)
        size = kinds.image_size(head) if kind is Kind.IMAGE else None
        self.app.ledger.record_info(task.file_id, kind, mime, info.size)
        return SourceObject(
            file_id=task.file_id, path=task.path, size=info.size, mime=mime, kind=kind, date_taken=date_taken,
            gps=task.gps, etag=info.etag, width=size[0] if size else None, height=size[1] if size else None,
        )

    def _transfer(self, task: FileTask, obj: SourceObject, sink_name: str, routed: list[str]) -> bool:
        sink = self.app.sinks[sink_name]
        with structlog.contextvars.bound_contextvars(sink=sink_name):
            refusal = accepts(sink.capabilities, obj)
            if refusal:
                raise PermanentError(refusal, sink=sink_name, error_class=ErrorClass.INVALID)
            session = TransferSession(self, task.file_id, sink_name, task.resume_tokens.get(sink_name))
            started = time.monotonic()
            try:
                remote = retrying.call(
                    lambda: self._upload_once(sink, obj, session),
                    attempts=self.config.request_retries,
                    max_wait=self.config.request_max_wait,
                )
            except (Cancelled, LeaseLost, LedgerUnavailable):
                raise
            except Exception as exc:
                error_class, status, _ = classify(exc)
                permanent = _is_permanent(exc)
                self.app.ledger.record_transfer_failure(
                    self.worker, task.file_id, sink_name, str(error_class), status, str(exc), permanent
                )
                log.warning("upload_failed", error_class=str(error_class), status=status, error=str(exc),
                            attempt=task.attempts + 1, permanent=permanent)
                raise
            complete = self.app.ledger.record_done(self.worker, task.file_id, sink_name, remote, routed)
            outcome = "existed" if remote.existed else "copied"
            sent = 0 if remote.existed else obj.size
            with self._lock:
                self.summary.bytes += sent
                self.summary.count(sink_name, outcome)
            metrics.files_total.labels(sink=sink_name, outcome="copied").inc()
            metrics.bytes_total.labels(sink=sink_name).inc(sent)
            log.info("upload_finished", status=outcome, bytes=obj.size, remote_id=remote.remote_id,
                     url=remote.url, duration_ms=int((time.monotonic() - started) * 1000))
            return complete

    def _upload_once(self, sink: Sink, obj: SourceObject, session: TransferSession) -> RemoteObject:
        self.touch(obj.file_id)  # each attempt is a sign of life, even for sinks that send in one request
        with open_seekable(self.app.source, obj.path, obj.size) as body:
            return sink.upload(obj, body, session)

    def _fail(self, task: FileTask, sink: str | None, exc: BaseException, *, permanent: bool | None = None) -> None:
        error_class, status, _ = classify(exc)
        if isinstance(exc, _InvalidRow):
            error_class = ErrorClass.INVALID
        if permanent is None:
            permanent = _is_permanent(exc)
        state, attempts = self.app.ledger.record_failure(
            self.worker, task.file_id, error_class=str(error_class), status=status, error=str(exc),
            permanent=permanent, max_attempts=self.config.max_attempts,
            backoff_seconds=self.config.retry_backoff,
        )
        with self._lock:
            if state == "failed":
                self.summary.failed += 1
            else:
                self.summary.retry_later += 1
            self.summary.failures.append((task.file_id, sink or "-", str(exc)))
        metrics.files_total.labels(sink=sink or "-", outcome="failed" if state == "failed" else "retry").inc()
        where = {"sink": sink} if sink else {}
        log.warning("file_failed", state=state, attempt=attempts, error_class=str(error_class), status=status,
                    error=str(exc), **where)


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, _InvalidRow | SourceNotFound | PermanentError):
        return True
    error_class, _, transient = classify(exc)
    return not transient and error_class is not ErrorClass.INTERNAL


def _parse_date(text: str | None) -> datetime | None:
    if text is None or not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise _InvalidRow(f"dateTaken {text!r} is not a date") from None


def run(
    app: App,
    *,
    stop: threading.Event | None = None,
    abort: threading.Event | None = None,
    console: bool = False,
) -> RunSummary:
    """One pass over the due files. `stop`: claim nothing more; `abort`: cancel in-flight transfers too."""
    pipeline = Pipeline(app, stop=stop or threading.Event(), abort=abort or threading.Event())
    if not (console and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"):
        return pipeline.run()
    from filesync.progress import ProgressDisplay

    with ProgressDisplay() as display:
        pipeline.on_backlog = display.set_total
        pipeline.on_file = display.file_done
        pipeline.on_bytes = display.add_bytes
        return pipeline.run()
