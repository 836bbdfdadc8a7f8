"""One run: enqueue new rows, claim due files in small batches, stream each to its sinks, record outcomes.

Threads, not processes: the work is network-bound and every client used here is synchronous. Each
transfer re-opens its source stream, so a retry or a resumed upload never depends on bytes in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from filesync import kinds, metrics, redaction, transforms
from filesync.app import App, all_settings
from filesync.errors import (
    ErrorClass,
    FilesyncError,
    LeaseLost,
    LedgerUnavailable,
    NameTaken,
    RowChanged,
    SourceError,
)
from filesync.ledger import claim_token, host_prefix
from filesync.model import FileTask, Kind, Limits, RemoteObject, RunSummary, Selection, SourceObject
from filesync.observer import Observer
from filesync.outcomes import Outcomes
from filesync.paths import UnsafePath, safe_relative
from filesync.retry import Action, Decision, RetryPolicy
from filesync.scan import scan
from filesync.sinks import Sink, check_accepts
from filesync.sinks._body import read_up_to
from filesync.sources import ObjectInfo
from filesync.sources.reader import SeekableReader, borrow, open_seekable

log = structlog.get_logger("filesync")

SOURCE = "source"  # the name a stopped source goes by in RunSummary.stopped
#: Transfers to one destination that fail in a row (each after its own retries) before the destination is
#: stopped for the run: a few files can fail on their own; this many in a row is the destination.
STREAK = 10


class Cancelled(Exception):
    """The transfer was cancelled by a shutdown; its file is handed back, not failed."""


class _InvalidRow(Exception):
    """The app's row cannot be processed as it is (empty path, bad date)."""


class _FailingStreak(Exception):
    """A destination kept failing transiently: stopped for the run instead of burning every file's attempts."""


class _Parked(Exception):
    """A destination's transfer was parked in an earlier run; its reason is the file's."""


@dataclass
class TransferSession:
    """The UploadSession the pipeline gives a sink: resume tokens go to the ledger at once."""

    pipeline: Pipeline
    file_id: str
    sink: str
    token: str | None
    replace: bool = False

    @property
    def resume_token(self) -> str | None:
        return self.token

    def save_resume_token(self, token: str | None) -> None:
        self.pipeline.app.ledger.save_resume_token(self.pipeline.worker, self.file_id, self.sink, token)
        self.token = token

    def progress(self, nbytes: int) -> None:
        self.pipeline.touch(self.file_id)
        self.pipeline.observer.transfer_progress(self.file_id, self.sink, nbytes)
        if self.pipeline.abort.is_set():
            raise Cancelled(f"{self.sink}: transfer of {self.file_id} cancelled by shutdown")


@dataclass
class Pipeline:
    app: App
    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    observer: Observer = field(default_factory=Observer)
    #: monotonic time a scheduled tick fired: replicas on one schedule skip an enqueue another did since
    tick_started: float | None = None
    selection: Selection = field(default_factory=Selection)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.config = self.app.config
        self.worker = claim_token(self.config.worker_id)
        self.policy = RetryPolicy(
            request_tries=self.config.request_retries, max_wait=self.config.request_max_wait,
            max_attempts=self.config.max_attempts, backoff=self.config.retry_backoff,
        )
        self.outcomes = Outcomes(self.app.ledger, self.worker, observer=self.observer)
        # Whatever front end runs us, every outcome is redacted before it is stored or shown.
        redaction.install(self.config.env.secret_values(all_settings()))
        self.summary = self.outcomes.summary
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}  # file id -> last sign of life (monotonic)
        self._failing: dict[str, int] = {}  # destination -> transfers failed in a row
        self._readers: dict[str, SeekableReader] = {}  # file id -> the reader its inspection opened
        self._finished = threading.Event()
        self._started = time.monotonic()
        self._claimed = 0  # files claimed by this run, over every pass

    # --- the run --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        ledger = self.app.ledger
        ledger.migrate()
        self.app.source.check()
        run_id = ledger.start_run(self.worker)
        ledger.abandon_dead_runs(host_prefix(self.config.worker_id), self.worker, run_id)
        self.summary.run_id = run_id
        self.summary.started_at = datetime.now(UTC)
        structlog.contextvars.bind_contextvars(run_id=run_id)
        started = self._started = time.monotonic()
        status, error = "ok", None
        try:
            released = ledger.release_dead_on_host(host_prefix(self.config.worker_id), self.worker)
            if self.config.catalog:
                scan(self.app)
            window = None if self.tick_started is None else time.monotonic() - self.tick_started + 1.0
            added = ledger.enqueue(window)
            requeued = ledger.requeue_for_routes(self.config.routes, self.app.routes.sinks_for)
            backlog = ledger.backlog()
            self.summary.rows_without_id = ledger.rows_without_id()
            if self.summary.rows_without_id:
                log.warning("rows_without_id", count=self.summary.rows_without_id,
                            hint="rows of the app's table whose id is NULL cannot be copied")
            self.summary.total_files = backlog if self.selection.limit is None else min(backlog, self.selection.limit)
            self.observer.run_started(self.summary)
            log.info("run_started", worker=self.worker, enqueued=added or 0, requeued=requeued,
                     released_stale_claims=released, backlog=backlog)
            log.info("enqueue", worker=self.worker, skipped=added is None, added=added or 0)
            self._work()
            self._retry_passes()
            if self.summary.failed or self.summary.retry_later or self.summary.stopped:
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
            self.summary.finished_at = datetime.now(UTC)
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
            self.observer.run_finished(s)
            structlog.contextvars.unbind_contextvars("run_id")
        return self.summary

    def _retry_passes(self) -> None:
        """rclone's --retries: once the backlog is done, the files that failed transiently in this run are
        tried again, up to FILESYNC_RUN_RETRIES passes. Their attempt was counted once; the backoff across
        runs is unchanged for those that still fail."""
        for n in range(1, self.config.run_retries + 1):
            if not self.outcomes.later or self._stopping():
                return
            due = self.app.ledger.make_due(sorted(self.outcomes.later))
            if not due:
                return
            self.summary.retry_passes = n
            log.info("run_retry_pass", files=due, passes=f"{n}/{self.config.run_retries}")
            self._work()

    def _work(self) -> None:
        cfg = self.config
        claimed_total = self._claimed
        futures: dict[Future[None], str] = {}
        self._finished = threading.Event()
        limit = self.selection.limit or cfg.max_files or 0
        beat = threading.Thread(target=self._heartbeat, name="filesync-heartbeat", daemon=True)
        beat.start()
        pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="filesync-transfer")
        # Claim ahead: a few claimed files wait here, so a slot that frees starts its next file at once
        # instead of waiting for a claim round trip. They are touched, so the heartbeat keeps their leases.
        ahead: deque[FileTask] = deque()
        depth = min(cfg.claim_batch, cfg.concurrency)

        def start_queued() -> None:
            while ahead and len(futures) < cfg.concurrency and not self._stopping():
                task = ahead.popleft()
                ctx = contextvars.copy_context()  # worker threads do not inherit context variables (run_id)
                futures[pool.submit(ctx.run, self._run_task, task)] = task.file_id

        try:
            while True:
                start_queued()
                want = cfg.concurrency + depth - len(futures) - len(ahead)
                room = limit - claimed_total if limit else want
                if want >= min(depth, cfg.concurrency) and room > 0 and not self._stopping():
                    with self._lock:
                        busy = list(self._in_flight)
                    for task in self.app.ledger.claim(self.worker, min(want, room, cfg.claim_batch),
                                                      cfg.lease_seconds, busy, run_id=self.summary.run_id,
                                                      selection=self.selection):
                        claimed_total += 1
                        self.touch(task.file_id)
                        ahead.append(task)
                    start_queued()
                if not futures:
                    break
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    file_id = futures.pop(future)
                    with self._lock:
                        self._in_flight.pop(file_id, None)
                    future.result()
            if self.stop.is_set() or self.abort.is_set():
                self.summary.interrupted = True
        finally:
            if ahead:  # claimed ahead but never started (a stop, a cut-off): hand them back at once
                ids = [task.file_id for task in ahead]
                with contextlib.suppress(FilesyncError):
                    self.app.ledger.release(self.worker, ids)
                with self._lock:
                    for file_id in ids:
                        self._in_flight.pop(file_id, None)
            self._claimed = claimed_total
            self._finished.set()
            pool.shutdown(wait=not self.abort.is_set(), cancel_futures=True)

    def _stopping(self) -> bool:
        """Claim nothing more: asked to stop, or to abort (which implies it), or every destination is
        stopped for this run."""
        if self.stop.is_set() or self.abort.is_set():
            return True
        if self.summary.cut_off is None:
            lim = self.limits
            if lim.max_duration is not None and time.monotonic() - self._started >= lim.max_duration:
                self.summary.cut_off = f"--max-duration {lim.max_duration:g}s reached"
            elif lim.max_bytes is not None and self.summary.bytes >= lim.max_bytes:
                self.summary.cut_off = f"--max-transfer {lim.max_bytes} bytes reached"
            if self.summary.cut_off is not None:
                log.warning("run_cut_off", reason=self.summary.cut_off, hint="in-flight transfers finish first")
        if self.summary.cut_off is not None:
            return True
        stopped = set(self.summary.stopped)
        return SOURCE in stopped or (bool(stopped) and set(self.app.routes.all_sinks()) <= stopped)

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
                with contextlib.suppress(FilesyncError):
                    self.outcomes.file_released(task, "shutdown")
            except RowChanged as exc:  # sent again in this run, from the new path, replacing the old bytes
                log.warning("file_changed", error=str(exc))
                with contextlib.suppress(FilesyncError):
                    self.app.ledger.release(self.worker, [task.file_id])
            except LeaseLost as exc:
                log.warning("lease_lost", error=str(exc))
            except LedgerUnavailable as exc:
                self.outcomes.unrecorded(task, exc)
            except Exception as exc:  # a bug must not stop the run: count it on the file
                log.exception("file_crashed", error=str(exc))
                self.outcomes.file_failed(task, None, exc, self._decide(exc, task))

    def _process(self, task: FileTask) -> None:
        log.debug("file_claimed", path=task.path, attempt=task.attempts + 1)
        if SOURCE in self.summary.stopped:
            self.outcomes.file_deferred(task, "the source is stopped for this run")
            return
        try:
            self._process_inspected(task)
        finally:
            reader = self._readers.pop(task.file_id, None)
            if reader is not None:
                reader.close()

    def _process_inspected(self, task: FileTask) -> None:
        try:
            obj = self._inspect(task)
        except (_InvalidRow, SourceError) as exc:
            decision = self._decide(exc, task)
            if decision.action is Action.STOP:
                self.outcomes.destination_stopped(SOURCE, exc)
                self.outcomes.file_deferred(task, "the source is stopped for this run")
            else:
                self.outcomes.file_failed(task, None, exc, decision)
            return
        routed = self.app.routes.sinks_for(obj.mime)
        if not routed:
            self.outcomes.file_skipped(task, obj, f"unsupported type {obj.mime}")
            return
        pending = [s for s in routed if s not in task.done_sinks and s not in task.parked_sinks
                   and (self.selection.sink is None or s == self.selection.sink)]
        later: tuple[str, BaseException, Decision] | None = None
        parked: tuple[str, BaseException, Decision] | None = None
        stopped = complete = False
        for sink_name in pending:
            if sink_name in self.summary.stopped:
                stopped = True
                continue
            try:
                complete = self._transfer(task, obj, sink_name, routed)
            except (Cancelled, LeaseLost, LedgerUnavailable):
                raise
            except Exception as exc:
                decision = self._decide(exc, task)
                if decision.action is Action.LATER and self._streak(sink_name, failed=True):
                    decision = Decision(Action.STOP, decision.error_class, decision.status)
                    exc = _FailingStreak(f"{sink_name}: {STREAK} transfers in a row failed ({exc}); backing off "
                                         "for this run")
                self.outcomes.transfer_failed(task, sink_name, exc, decision)
                if decision.action is Action.STOP:
                    self.outcomes.destination_stopped(sink_name, exc)
                    stopped = True
                elif decision.action is Action.PARK:
                    parked = parked or (sink_name, exc, decision)
                else:
                    later = later or (sink_name, exc, decision)
        if later is not None:  # a transient failure: the file comes back; parked transfers stay parked
            self.outcomes.file_failed(task, *later)
        elif stopped:
            self.outcomes.file_deferred(task, "a destination is stopped for this run")
        elif parked is not None:
            self.outcomes.file_failed(task, *parked)
        elif task.parked_sinks:  # the others are done; these stay parked until an operator retries them
            sink_name, (error_class, reason) = sorted(task.parked_sinks.items())[0]
            known = error_class in {c.value for c in ErrorClass}
            decision = Decision(Action.PARK, ErrorClass(error_class) if known else ErrorClass.CLIENT)
            self.outcomes.file_failed(task, sink_name, _Parked(reason), decision)
        else:
            if not complete:  # its transfers were all done earlier (flag reset, or a crash before the mark)
                complete = self.app.ledger.mark_complete(self.worker, task.file_id, routed)
            if complete and pending:
                self.outcomes.file_complete(task)
            elif not complete:
                self.outcomes.file_deferred(task, "not every routed destination holds the file yet")

    def _decide(self, exc: BaseException, task: FileTask) -> Decision:
        """After the request loop gave up: later, park or stop (an invalid row is permanent). A file this run
        already counted an attempt for (the end-of-run pass) is judged on that one attempt."""
        if isinstance(exc, _InvalidRow):
            return Decision(Action.PARK, ErrorClass.INVALID)
        attempts = task.attempts - (1 if task.file_id in self.outcomes.later else 0)
        return self.policy.decide(exc, tries=self.policy.request_tries, attempts=attempts)

    def _inspect(self, task: FileTask) -> SourceObject:
        if not task.path or not task.path.strip():
            raise _InvalidRow("path is empty")
        try:
            safe_relative(task.path)
        except UnsafePath:
            raise _InvalidRow(f"path {task.path!r} is not a safe object key") from None
        date_taken = _parse_date(task.date_taken)
        source, path = self.app.source, task.path

        def first_bytes() -> tuple[ObjectInfo, bytes]:
            """One GET: the object's facts and its first bytes, the reader kept for the transfers."""
            info, stream = source.open_with_info(path)
            reader = SeekableReader(source, path, info.size, self.config.http_timeout, stream=stream,
                                    memo=kinds.HEAD_BYTES)
            try:
                head = read_up_to(reader, kinds.HEAD_BYTES)  # type: ignore[arg-type]
            except BaseException:
                reader.close()
                raise
            self._readers[task.file_id] = reader
            return info, head

        info, head = self.policy.call(first_bytes)
        kind, mime = kinds.detect(task.path, info.content_type, head)
        size = kinds.image_size(head) if kind is Kind.IMAGE else None
        self.app.ledger.record_info(task.file_id, kind, mime, info.size)
        return SourceObject(
            file_id=task.file_id, path=task.path, size=info.size, mime=mime, kind=kind, date_taken=date_taken,
            gps=task.gps, etag=info.etag, width=size[0] if size else None, height=size[1] if size else None,
        )

    def _transfer(self, task: FileTask, obj: SourceObject, sink_name: str, routed: list[str]) -> bool:
        sink = self.app.sinks[sink_name]
        with structlog.contextvars.bound_contextvars(sink=sink_name), contextlib.ExitStack() as stack:
            derived = self._derive(obj, sink_name, sink)
            if derived is not None:
                stack.callback(derived.close)
                obj = replace(obj, size=derived.size, mime=derived.mime, width=derived.width,
                              height=derived.height, ext_override=derived.ext)
            check_accepts(sink_name, sink.capabilities, obj)
            name = sink.name_of(obj)
            if name is not None:
                owner = self.app.ledger.claim_name(self.worker, task.file_id, sink_name, name)
                if owner != task.file_id:
                    raise NameTaken(f"{name!r} belongs to file {owner}; file {task.file_id} ({obj.path}) maps to the "
                                    "same name: make the destination's name template unique (e.g. with {id})",
                                    sink=sink_name)
            session = TransferSession(self, task.file_id, sink_name, task.resume_tokens.get(sink_name),
                                      replace=sink_name in task.replace_sinks)
            started = time.monotonic()
            self.observer.transfer_started(task.file_id, obj.path, sink_name, obj.size)
            sent = obj
            remote = self.policy.call(lambda: self._upload_once(sink, sent, session, derived),
                                      on_retry=lambda exc, wait: self.outcomes.retried(sink_name, exc, wait))
            self._streak(sink_name, failed=False)
            return self.outcomes.transfer_done(task, obj, sink_name, remote, routed, started,
                                               derivation=_derivation(derived) if derived else None)

    def _derive(self, obj: SourceObject, sink_name: str, sink: Sink) -> transforms.Derived | None:
        """The copy FILESYNC_TRANSFORMS asks this destination to get (fitted to its limits, converted, or
        compressed), made once per transfer; None when the original goes as it is. Videos never change."""
        if obj.kind is not Kind.IMAGE:
            return None
        spec = transforms.spec_for(sink_name, self.app.transforms)
        plan = transforms.plan(spec, obj.mime, obj.size, obj.width, obj.height, sink.capabilities)
        if plan is None:
            return None

        def derive() -> transforms.Derived:
            self.touch(obj.file_id)
            with self._body(obj) as body:
                return transforms.apply(plan, body, obj.size)

        derived = self.policy.call(derive)
        log.info("image_derived", sink=sink_name, transform=str(spec), description=derived.description,
                 original_bytes=obj.size, sent_bytes=derived.size)
        return derived

    def _streak(self, sink: str, *, failed: bool) -> bool:
        """Count transfers to `sink` that failed in a row after their retries; True when the streak reaches
        STREAK: the destination is failing as a whole, and each further file would only burn an attempt."""
        with self._lock:
            self._failing[sink] = self._failing.get(sink, 0) + 1 if failed else 0
            return self._failing[sink] >= STREAK

    def _upload_once(self, sink: Sink, obj: SourceObject, session: TransferSession,
                     derived: transforms.Derived | None = None) -> RemoteObject:
        self.touch(obj.file_id)  # each attempt is a sign of life, even for sinks that send in one request
        if derived is not None:
            derived.body.seek(0)
            return sink.upload(obj, derived.body, session)  # type: ignore[arg-type]
        with self._body(obj) as body:
            return sink.upload(obj, body, session)

    def _body(self, obj: SourceObject) -> io.BufferedReader:
        """The file's bytes from the start: the reader inspection opened (its first bytes in memory, its
        stream read on where it stopped), else a new one."""
        reader = self._readers.get(obj.file_id)
        if reader is None:
            return open_seekable(self.app.source, obj.path, obj.size, timeout=self.config.http_timeout)
        return borrow(reader)


def _derivation(derived: transforms.Derived) -> dict[str, object]:
    """What the ledger records of a derived copy (and `filesync report` shows)."""
    original = derived.original
    return {
        "original": {"size": original.size, "width": original.width, "height": original.height,
                     "mime": original.mime},
        "sent": {"size": derived.size, "width": derived.width, "height": derived.height, "mime": derived.mime},
        "description": derived.description,
    }


#: Valid timestamps that no metadata date can carry: the file is copied without its date.
_OUT_OF_RANGE = ("infinity", "-infinity")


def _parse_date(text: str | None) -> datetime | None:
    """The capture date, from the ISO 8601 text the ledger reads (to_json: independent of DateStyle).
    infinity, -infinity, BC and beyond-9999 dates are valid timestamps: copied without a date, with a
    warning. Anything else unreadable (a text column holding garbage) is a row to fix."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    year = value.split("-", 1)[0]
    if value in _OUT_OF_RANGE or value.endswith(" BC") or (year.isdigit() and len(year) > 4):
        log.warning("date_out_of_range", date_taken=value, hint="copied without a capture date in its metadata")
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _InvalidRow(f"dateTaken {text!r} is not a date") from None


def run(app: App, *, stop: threading.Event | None = None, abort: threading.Event | None = None,
        observer: Observer | None = None, tick_started: float | None = None,
        selection: Selection | None = None, limits: Limits | None = None) -> RunSummary:
    """One pass over the due files. `stop`: claim nothing more; `abort`: cancel in-flight transfers too.
    The callbacks feed a progress display (the CLI wires one at a terminal)."""
    pipeline = Pipeline(app, stop=stop or threading.Event(), abort=abort or threading.Event(),
                        observer=observer or Observer(), tick_started=tick_started,
                        selection=selection or Selection(), limits=limits or Limits())
    return pipeline.run()
