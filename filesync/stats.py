"""A run's figures while it goes (rclone's `--stats`): counted from the engine's events by `RunStats`, shown
by the terminal display (`filesync.progress`) and, off a terminal, logged as `run_progress` JSON events
every FILESYNC_PROGRESS_SECONDS by `ProgressEvents` (cron, containers and the daemon).

The observer calls come from transfer threads: each only updates counters under one lock, so watching a
run costs the transfers nothing measurable (bench/console.py); the figures are computed when read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from filesync import alerts
from filesync.model import RunSummary
from filesync.observer import Observer, Observers
from filesync.settings import Environment, Setting, bounded_float, register

if TYPE_CHECKING:
    from filesync.app import App

log = structlog.get_logger("filesync")

PROGRESS_SETTINGS: tuple[Setting, ...] = register((
    Setting("FILESYNC_PROGRESS_SECONDS", "Off a terminal (cron, containers, the daemon): seconds between two "
            "`run_progress` log events giving a run's files and bytes done, rates and ETA (0.1 to 86400).",
            default="60", parse=bounded_float(0.1, 86400), group="Logs"),
))

#: How long a rate-limit note stays up after the wait the service asked for has passed.
RATE_NOTE_SECONDS = 10.0
#: File outcomes that end a file's turn in the run (`Observer.file_finished`).
WAITING = "waiting"


@dataclass(frozen=True)
class Transfer:
    """One transfer in flight."""

    file_id: str
    path: str
    sink: str
    size: int
    sent: int
    seconds: float

    @property
    def name(self) -> str:
        """The file's name, for a line of the display."""
        return self.path.rsplit("/", 1)[-1] or self.path

    @property
    def percent(self) -> float | None:
        return min(100.0, 100.0 * self.sent / self.size) if self.size else None


@dataclass(frozen=True)
class Progress:
    """The figures of a run at one moment; rates are over the run so far."""

    elapsed: float
    files_total: int
    files_done: int
    outcomes: dict[str, int]  # file outcome -> files (a file retried by the end-of-run pass counts once)
    per_sink: dict[str, dict[str, int]]  # destination -> transfer outcome -> transfers
    bytes_sent: int
    #: the sizes of the files started so far, plus their mean size for each file not started yet
    bytes_total: int | None
    bytes_total_estimated: bool  # some files were not started yet: their sizes are the mean's guess
    retries: int
    in_flight: list[Transfer]
    rate_limited: dict[str, float]  # destination -> seconds it still waits (0: waited lately)
    stopped: dict[str, str]  # destination -> why its circuit opened

    @property
    def files_per_second(self) -> float:
        return self.files_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def failures(self) -> int:
        return self.outcomes.get("failed", 0)

    @property
    def waiting(self) -> int:
        return self.outcomes.get(WAITING, 0)

    @property
    def eta(self) -> float | None:
        """Seconds left: by bytes at the byte rate so far when the total is known (files differ in size),
        else by files at the file rate; 0 when every file is done, None before anything moved."""
        if self.files_done >= self.files_total:
            return 0.0
        if self.bytes_total is not None and self.bytes_per_second > 0:
            return max(self.bytes_total - self.bytes_sent, 0) / self.bytes_per_second
        if self.files_per_second > 0:
            return (self.files_total - self.files_done) / self.files_per_second
        return None

    def as_event(self) -> dict[str, Any]:
        """The `run_progress` log event's fields."""
        return {
            "files_done": self.files_done, "files_total": self.files_total,
            "bytes_sent": self.bytes_sent, "bytes_total": self.bytes_total,
            "files_per_s": round(self.files_per_second, 3), "mb_per_s": round(self.bytes_per_second / 1e6, 3),
            "eta_s": None if self.eta is None else round(self.eta), "elapsed_s": round(self.elapsed, 1),
            "outcomes": self.outcomes, "per_sink": self.per_sink, "retries": self.retries,
            "failed": self.failures, "waiting": self.waiting,
            "in_flight": [{"file_id": t.file_id, "name": t.name, "sink": t.sink,
                           "percent": None if t.percent is None else round(t.percent)} for t in self.in_flight],
            "rate_limited": sorted(self.rate_limited), "stopped": self.stopped,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files_per_s": self.files_per_second, "bytes_per_s": self.bytes_per_second,
                "eta_s": self.eta}


@dataclass
class _Flight:
    path: str
    size: int
    started: float
    sent: int = 0


@dataclass
class RunStats(Observer):
    """Counts a run's events; `snapshot()` gives the figures. `count_due`, when given, replaces the engine's
    total at the run's start (the files a narrowed `filesync run` selects, not the whole backlog)."""

    count_due: Callable[[], int] | None = None
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _started: float | None = None
    _total: int = 0
    _done: int = 0
    _outcomes: dict[str, int] = field(default_factory=dict)
    _waiting_ids: set[str] = field(default_factory=set)  # a second turn (end-of-run pass) is not a new file
    _per_sink: dict[str, dict[str, int]] = field(default_factory=dict)
    _flights: dict[tuple[str, str], _Flight] = field(default_factory=dict)
    _sent: int = 0
    _sizes: dict[str, int] = field(default_factory=dict)  # file id -> its bytes over the transfers started
    _retries: int = 0
    _rate_limited: dict[str, float] = field(default_factory=dict)  # destination -> monotonic end of its wait
    _stopped: dict[str, str] = field(default_factory=dict)

    def run_started(self, summary: RunSummary) -> None:
        total = summary.total_files
        if self.count_due is not None:
            try:
                total = self.count_due()
            except Exception:  # a figure for the display; the run must go on without it
                total = summary.total_files
        with self._lock:
            self._started = self.clock()
            self._total = total

    def transfer_started(self, file_id: str, path: str, sink: str, size: int) -> None:
        with self._lock:
            self._flights[(file_id, sink)] = _Flight(path, size, self.clock())
            self._sizes[file_id] = self._sizes.get(file_id, 0) + size

    def transfer_progress(self, file_id: str, sink: str, nbytes: int) -> None:
        with self._lock:
            self._sent += nbytes
            flight = self._flights.get((file_id, sink))
            if flight is not None:
                flight.sent += nbytes

    def transfer_finished(self, file_id: str, sink: str, outcome: str) -> None:
        with self._lock:
            self._flights.pop((file_id, sink), None)
            counts = self._per_sink.setdefault(sink, {})
            counts[outcome] = counts.get(outcome, 0) + 1

    def file_finished(self, file_id: str, outcome: str) -> None:
        with self._lock:
            if file_id in self._waiting_ids:  # its second turn: replace the first outcome
                self._waiting_ids.discard(file_id)
                self._outcomes[WAITING] -= 1
            else:
                self._done += 1
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
            if outcome == WAITING:
                self._waiting_ids.add(file_id)

    def request_retried(self, sink: str, error_class: str, wait: float) -> None:
        with self._lock:
            self._retries += 1
            if error_class == "rate_limited":
                self._rate_limited[sink] = max(self._rate_limited.get(sink, 0.0), self.clock() + wait)

    def destination_stopped(self, sink: str, reason: str) -> None:
        with self._lock:
            self._stopped[sink] = reason

    def snapshot(self) -> Progress:
        now = self.clock()
        with self._lock:
            elapsed = now - self._started if self._started is not None else 0.0
            total = max(self._total, self._done)
            known = sum(self._sizes.values())
            unseen = max(total - len(self._sizes), 0)
            flights = [Transfer(fid, f.path, sink, f.size, f.sent, now - f.started)
                       for (fid, sink), f in sorted(self._flights.items(), key=lambda kv: kv[1].started)]
            limited = {sink: max(0.0, until - now) for sink, until in self._rate_limited.items()
                       if now < until + RATE_NOTE_SECONDS and sink not in self._stopped}
            return Progress(
                elapsed=elapsed, files_total=total, files_done=self._done,
                outcomes={k: v for k, v in self._outcomes.items() if v}, per_sink={
                    s: dict(c) for s, c in sorted(self._per_sink.items())},
                bytes_sent=self._sent,
                bytes_total=max(self._sent, known + round(known / len(self._sizes) * unseen)) if self._sizes else None,
                bytes_total_estimated=bool(self._sizes) and unseen > 0,
                retries=self._retries, in_flight=flights, rate_limited=limited, stopped=dict(self._stopped),
            )


class ProgressEvents(Observer):
    """A `run_progress` log event every `interval` seconds while a run goes (not at its end: `run_finished`
    says it all). Runs its own timer thread, started by the run and stopped with it."""

    def __init__(self, interval: float, stats: RunStats | None = None) -> None:
        self.interval = interval
        self.stats = stats or RunStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, env: Environment, stats: RunStats | None = None) -> ProgressEvents:
        return cls(env.get_value(PROGRESS_SETTINGS[0]), stats)

    def run_started(self, summary: RunSummary) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, name="filesync-progress", daemon=True)
        self._thread.start()

    def run_finished(self, summary: RunSummary) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("run_progress", **self.stats.snapshot().as_event())


def unattended(app: App, stats: RunStats | None = None) -> Observer:
    """What watches a run nobody watches live (cron, containers, the daemon): the figures counted, logged
    as `run_progress` events, and alerts sent after the run. One per run: it holds that run's figures."""
    stats = stats or RunStats()
    observers: list[Observer] = [stats]
    try:
        observers += [ProgressEvents.from_env(app.config.env, stats), alerts.Alerts.from_app(app)]
    except Exception as exc:  # watching a run must never be why it does not happen (a bad setting is named)
        log.warning("run_watchers_unavailable", error_class=type(exc).__name__, error=str(exc),
                    hint="no run_progress events or alerts for this run; the run goes on")
    return Observers(observers)
