"""`filesync daemon`: runs on a cron schedule, never two at once, and stops cleanly on SIGTERM.

APScheduler 3 (BackgroundScheduler) fires one job; the main thread only waits for a signal. The
job has `max_instances=1` and `coalesce=True`: a tick that comes while a run is still going is
skipped and logged (`tick_skipped`), never queued, and ticks missed while the process was stalled
collapse into one run. A run that raises is logged and the schedule goes on.

The App (settings, ledger connections, sinks) is built once at start, so a bad setting stops the
daemon before it schedules anything (exit 2) and connections are reused between runs. If the
database cannot be reached at start, the daemon starts anyway and builds the App at the next tick.

Health (`/healthz`, rule in filesync/health.py): unhealthy while shutting down, when the scheduler
stopped, when the database does not answer, or when the last run crashed or could not reach its
database or source; a run with some files failed is healthy.

HTTP (`FILESYNC_HTTP_HOST:FILESYNC_HTTP_PORT`): /healthz, /metrics, and the JSON API and status page of
filesync/api, which reads the ledger, shows the current run's progress (`self.live`, an Observer every
run is given) and can start a run now (`run_now`: the scheduler's job is moved to now; never two at once).

SIGHUP does not stop the daemon: it is logged (`sighup`) and the log file is reopened under its name,
which is what a logrotate `postrotate` sends it for.

Shutdown: the first SIGTERM/SIGINT sets `stop` (no new claims), waits up to FILESYNC_SHUTDOWN_GRACE
seconds for in-flight transfers, then sets `abort` (transfers cancelled at their next chunk, their
files handed back) and exits 0. A second signal exits at once with 128+signal; unfinished leases
then simply expire and the files are picked up by a later run.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from filesync import logs, metrics, stats
from filesync.api import Api, LiveRun
from filesync.app import App, all_settings
from filesync.errors import ConfigError, LedgerUnavailable, SourceUnavailable
from filesync.health import HealthServer, run_problem
from filesync.model import RunSummary
from filesync.observer import Observer, Observers
from filesync.redaction import redact
from filesync.schedule import DaemonConfig, cron_trigger
from filesync.settings import Environment

log = structlog.get_logger("filesync.scheduler")

JOB_ID = "filesync-run"
ABORT_WAIT = 10.0  # seconds an aborted run gets to hand its files back before the process leaves anyway

RunFn = Callable[..., RunSummary]
BuildFn = Callable[[Environment], App]
PING_TIMEOUT = 5.0  # seconds /healthz waits for the database; Docker's HEALTHCHECK timeout is longer


class _Ping:
    """One call in a daemon thread, so a hung call never keeps the process from exiting."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._fn = fn
        threading.Thread(target=self._call, name="filesync-ping", daemon=True).start()

    def _call(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def result(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError
        if self.error is not None:
            raise self.error


class Daemon:
    """One scheduler, one job, one App; state shared with the health probe."""

    def __init__(self, env: Environment, config: DaemonConfig, build: Callable[[Environment], App],
                 run: RunFn) -> None:
        self.env = env
        self.config = config
        self._build = build
        self._run = run
        self.app: App | None = None
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.shutdown_requested = threading.Event()
        self._signals = 0
        self._lock = threading.Lock()
        # (last run, how many runs in a row could not do their work, since when): one tuple, replaced
        # whole, so a probe never sees one run's record with another's count
        self._runs: tuple[dict[str, Any] | None, int, str | None] = (None, 0, None)
        self._hangups = 0  # SIGHUPs received; the handler only counts, the main loop reopens the log
        self._hangups_handled = 0
        self.ping_timeout = PING_TIMEOUT
        self._ping_lock = threading.Lock()
        self._pending_ping: _Ping | None = None
        self.live = LiveRun()  # the current run's progress, read by the API
        self.observers: list[Observer] = [self.live]  # every run reports to each of these
        self._run_requested = False  # POST /api/run moved the job to now; its tick has not begun yet
        self.scheduler = BackgroundScheduler(
            timezone=config.timezone,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR
        )

    # --- the job ---------------------------------------------------------------------------------
    def _ensure_app(self) -> App:
        with self._lock:
            if self.app is None:
                self.app = self._build(self.env)
            return self.app

    def tick(self) -> None:
        """One scheduled run; every failure is logged here so the schedule always goes on."""
        with self._lock:
            self._run_requested = False
            if self.stop.is_set():
                return
            self.idle.clear()
        fired = time.monotonic()
        if self.config.start_jitter and self.stop.wait(random.uniform(0, self.config.start_jitter)):
            self.idle.set()
            return
        started = datetime.now(self.config.timezone)
        try:
            app = self._ensure_app()
            summary = self._run(app, stop=self.stop, abort=self.abort, tick_started=fired,
                                observer=Observers([*self.observers, stats.unattended(app)]))
            stopped = "; ".join(f"{name}: {why}" for name, why in sorted(summary.stopped.items()))
            self._record(started, _result(summary), summary=summary, error=stopped or None)
            metrics.ticks_total.labels("ran").inc()
        except LedgerUnavailable as exc:
            metrics.ticks_total.labels("database_unavailable").inc()
            self._record(started, "database_unavailable", error=str(exc))
            log.error("database_unavailable", error_class="LedgerUnavailable", error=str(exc),
                      next_run=self.next_run(), hint="run skipped; the schedule goes on")
        except ConfigError as exc:  # a setting the run found unusable (a missing app table or column)
            metrics.ticks_total.labels("error").inc()
            self._record(started, "error", error=f"{type(exc).__name__}: {exc}")
            log.error("run_failed", error_class="ConfigError", error=str(exc), next_run=self.next_run(),
                      hint="fix the setting it names; the schedule goes on")
        except SourceUnavailable as exc:
            metrics.ticks_total.labels("source_unavailable").inc()
            self._record(started, "source_unavailable", error=str(exc))
            log.error("source_unavailable", error_class="SourceUnavailable", error=str(exc),
                      next_run=self.next_run(), hint="run skipped; the schedule goes on")
        except Exception as exc:
            metrics.ticks_total.labels("error").inc()
            self._record(started, "error", error=f"{type(exc).__name__}: {exc}")
            log.exception("run_crashed", error_class=type(exc).__name__, error=str(exc),
                          next_run=self.next_run())
        finally:
            self.idle.set()

    def _record(self, started: datetime, result: str, *, summary: RunSummary | None = None,
                error: str | None = None) -> None:
        record: dict[str, Any] = {
            "started": started.isoformat(),
            "finished": datetime.now(self.config.timezone).isoformat(),
            "result": result,
        }
        if summary is not None:
            record.update(run_id=summary.run_id, copied=summary.copied, skipped=summary.skipped,
                          failed=summary.failed, retry_later=summary.retry_later, bytes=summary.bytes)
        if error is not None:
            record["error"] = redact(error)  # shown by /healthz, outside the log's redaction
        _, failing, since = self._runs
        if run_problem(record) is None:
            self._runs = (record, 0, None)
        else:
            self._runs = (record, failing + 1, since or record["started"])

    @property
    def last_run(self) -> dict[str, Any] | None:
        return self._runs[0]

    @property
    def failing_runs(self) -> int:
        """Runs in a row that could not do their work (health.BROKEN_RESULTS)."""
        return self._runs[1]

    def _on_event(self, event: JobEvent) -> None:
        scheduled = [t.isoformat() for t in getattr(event, "scheduled_run_times", []) or []]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            metrics.ticks_total.labels("skipped").inc()
            log.warning("tick_skipped", reason="previous run still going", scheduled=scheduled,
                        next_run=self.next_run())
        elif event.code == EVENT_JOB_MISSED:
            metrics.ticks_total.labels("missed").inc()
            log.warning("tick_missed", reason="the scheduler woke too late", scheduled=scheduled)
        elif event.code == EVENT_JOB_ERROR:  # tick() catches everything; this is a last resort
            log.error("run_crashed", error_class=type(event.exception).__name__, error=str(event.exception))

    def run_now(self) -> str:
        """Start a run now unless one is going or starting: "started", "running" or "stopping".

        The job is moved to now rather than run beside the scheduler, so `max_instances=1` still holds and
        the schedule carries on from its trigger afterwards.
        """
        with self._lock:
            if self.stop.is_set() or not self.scheduler.running:
                return "stopping"
            if self._run_requested or not self.idle.is_set():
                return "running"
            self.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(self.config.timezone))
            self._run_requested = True
        log.info("run_requested", action="run now", via="api")
        return "started"

    def next_run(self) -> str | None:
        job = self.scheduler.get_job(JOB_ID) if self.scheduler.running else None
        when = getattr(job, "next_run_time", None)
        return when.isoformat() if when else None

    # --- health ----------------------------------------------------------------------------------
    def probe(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the scheduler thread is alive, the database answers and the last run got through
        (the rule: filesync/health.py)."""
        last_run, failing_runs, failing_since = self._runs
        body: dict[str, Any] = {"last_run": last_run, "next_run": self.next_run()}
        thread = getattr(self.scheduler, "_thread", None)
        alive = self.scheduler.running and thread is not None and thread.is_alive()
        body["scheduler"] = "alive" if alive else "stopped"
        if self.shutdown_requested.is_set():
            return False, {"status": "unavailable", "reason": "shutting down", **body}
        if not alive:
            return False, {"status": "unavailable", "reason": "scheduler is not running", **body}
        try:
            self._ping()
        except TimeoutError:
            return False, {"status": "unavailable", "database": "unreachable", **body,
                           "reason": f"database did not answer within {self.ping_timeout:g} s"}
        except LedgerUnavailable as exc:
            return False, {"status": "unavailable", "reason": redact(f"database unreachable: {exc}"),
                           "database": "unreachable", **body}
        except Exception as exc:
            return False, {"status": "unavailable", "database": "error",
                           "reason": redact(f"database check failed: {type(exc).__name__}: {exc}"), **body}
        problem = run_problem(last_run)
        if problem is not None:
            return False, {"status": "unavailable", "reason": problem, "database": "ok", "failing_runs": failing_runs,
                           "failing_since": failing_since, **body}
        return True, {"status": "ok", "database": "ok", **body}

    def _ping(self) -> None:
        """`ledger.ping()` with a short deadline: the pool may wait far longer for a dead server.

        One ping at a time runs in a daemon thread; probes that come while it is pending share it.
        """
        with self._ping_lock:
            pending = self._pending_ping
            if pending is None or pending.done.is_set():
                pending = self._pending_ping = _Ping(lambda: self._ensure_app().ledger.ping())
        pending.result(self.ping_timeout)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            log.warning("shutdown_forced", signal=name, hint="leases expire; a later run picks the files up")
            logging.shutdown()
            os._exit(128 + signum)
        log.info("shutdown_requested", signal=name, grace_seconds=self.config.grace)
        self.shutdown_requested.set()
        self.stop.set()

    def on_hangup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP only counts here; `wait_for_signal` reopens the log outside the signal handler, so a
        record being written when the signal came is never cut by the stream being swapped under it."""
        self._hangups += 1

    def handle_hangups(self) -> None:
        """Reopen the log file once for the SIGHUPs received since the last call, and say so."""
        received = self._hangups
        if received == self._hangups_handled:
            return
        self._hangups_handled = received
        logs.reopen()
        log.info("sighup", action="log file reopened", pid=os.getpid())

    def start(self) -> None:
        trigger = cron_trigger(self.config.schedule, self.config.timezone)
        extra: dict[str, Any] = {}
        if self.config.run_on_start:
            extra["next_run_time"] = datetime.now(self.config.timezone)
        self.scheduler.add_job(self.tick, trigger=trigger, id=JOB_ID, name="filesync run", **extra)
        self.scheduler.start()

    def wait_for_signal(self) -> None:
        """Until SIGTERM/SIGINT; a SIGHUP is handled within a second."""
        while not self.shutdown_requested.wait(timeout=1.0):
            self.handle_hangups()

    def shutdown(self) -> bool:
        """Stop scheduling, let the run finish within the grace period, then abort it. True when idle."""
        self.stop.set()
        self.scheduler.shutdown(wait=False)
        if self.idle.wait(timeout=self.config.grace):
            return True
        log.warning("grace_expired", grace_seconds=self.config.grace,
                    hint="cancelling transfers; their files go back to the queue")
        self.abort.set()
        return self.idle.wait(timeout=ABORT_WAIT)

    def close(self) -> None:
        if self.app is not None:
            try:
                self.app.close()
            except Exception as exc:
                log.warning("close_failed", error_class=type(exc).__name__, error=str(exc))


def _result(summary: RunSummary) -> str:
    """How a run that returned ended, in the runs table's terms: some files failed is still a run."""
    if summary.interrupted:
        return "interrupted"
    if summary.stopped:  # a destination refused the setup (credentials, quota): the daemon cannot do its job
        return "stopped"
    return "failed" if summary.failed or summary.retry_later else "ok"


def serve(env: Environment, build: BuildFn, run: RunFn) -> int:
    """Run the daemon until SIGTERM/SIGINT; the exit code for `filesync daemon`.

    `build` makes the App and `run` does one pass: the caller (the CLI) hands them in, so the daemon
    knows how to schedule, not what a run is. Logging is configured by the caller.
    """
    config = DaemonConfig.load(env)
    # The scheduler's own warnings are replaced by structured tick_skipped / tick_missed events.
    for name in ("apscheduler.scheduler", "apscheduler.executors"):
        logging.getLogger(name).setLevel(logging.ERROR)

    daemon = Daemon(env, config, build, run)
    # From here until the end SIGHUP never stops the process, as its default action would (logrotate).
    previous_hup = signal.signal(signal.SIGHUP, daemon.on_hangup)
    try:
        daemon.app = build(env)
    except LedgerUnavailable as exc:
        log.error("database_unavailable", error_class="LedgerUnavailable", error=str(exc),
                  hint="starting anyway; each tick tries again")

    http: HealthServer | None = None
    if config.http_port:
        api = Api(host=config.http_host, token=config.http_token, app=daemon._ensure_app, live=daemon.live,
                  run_now=daemon.run_now, secrets=env.secret_values(all_settings()))
        http = HealthServer(config.http_host, config.http_port, daemon.probe, api.handle).start()
    previous = {sig: signal.signal(sig, daemon.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.start()
        log.info("daemon_started", schedule=config.schedule, timezone=str(config.timezone),
                 run_on_start=config.run_on_start, next_run=daemon.next_run(),
                 http=f"{config.http_host}:{http.port}" if http else None, pid=os.getpid())
        daemon.wait_for_signal()
        began = time.monotonic()
        clean = daemon.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if http is not None:
        http.stop()
    if not clean:
        log.error("daemon_stopped", exit_code=0, in_flight=True, seconds=round(time.monotonic() - began, 1),
                  hint="a transfer did not return after abort; its lease expires and a later run redoes it")
        logging.shutdown()
        os._exit(0)  # the stuck worker thread would otherwise hold the interpreter open
    daemon.close()
    log.info("daemon_stopped", exit_code=0, seconds=round(time.monotonic() - began, 1),
             aborted=daemon.abort.is_set())
    if daemon.abort.is_set():
        # Cancelled transfer threads may still sit in a socket read until their HTTP timeout; their
        # files are already handed back, so nothing is lost by not waiting for them at exit.
        logging.shutdown()
        os._exit(0)
    signal.signal(signal.SIGHUP, previous_hup)
    return 0

