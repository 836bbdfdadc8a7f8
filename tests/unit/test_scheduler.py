"""The daemon's pure parts: cron parsing, settings, and the tick/probe logic with a stand-in run."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from filesync import metrics
from filesync.daemon import Daemon
from filesync.errors import ConfigError, LedgerUnavailable, SourceUnavailable
from filesync.model import RunSummary
from filesync.schedule import DaemonConfig, cron_expression, cron_trigger, cron_weekdays
from filesync.settings import Environment

UTC = ZoneInfo("UTC")


def _fires(expr: str, start: datetime, n: int, tz: ZoneInfo = UTC) -> list[datetime]:
    trigger = cron_trigger(expr, tz)
    out: list[datetime] = []
    previous = None
    now = start
    for _ in range(n):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        out.append(fire)
        previous, now = fire, fire
    return out


@pytest.mark.parametrize(("field", "expected"), [
    ("*", "*"),
    ("0", "sun"),
    ("7", "sun"),
    ("1-5", "mon,tue,wed,thu,fri"),
    ("mon-fri", "mon,tue,wed,thu,fri"),
    ("*/2", "sun,tue,thu,sat"),
    ("5-7", "sun,fri,sat"),
    ("1,3", "mon,wed"),
    ("Sun", "sun"),
])
def test_weekday_field_keeps_crontab_meaning(field: str, expected: str) -> None:
    assert cron_weekdays(field) == expected


def test_five_fields_fire_on_the_minute_in_crontab_terms() -> None:
    # 2024-01-05 is a Friday: "1-5" (Mon-Fri in crontab) must not fire on Saturday the 6th.
    fires = _fires("30 9 * * 1-5", datetime(2024, 1, 5, 10, 0, tzinfo=UTC), 2)
    assert [f.strftime("%a %H:%M:%S") for f in fires] == ["Mon 09:30:00", "Tue 09:30:00"]


def test_six_fields_put_seconds_first() -> None:
    fires = _fires("*/3 * * * * *", datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC), 3)
    assert [f.second for f in fires] == [3, 6, 9]


def test_schedule_follows_the_time_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    fire = _fires("0 2 * * *", datetime(2024, 6, 1, 12, 0, tzinfo=UTC), 1, tz=paris)[0]
    assert fire.astimezone(UTC).hour == 0  # 02:00 in Paris in June is 00:00 UTC


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "* * * * * * *", "*/0 * * * *", "* * * * 9",
                                 "0 0 31 2 *"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        cron_expression(bad)


def _env(**values: str) -> Environment:
    return Environment(values, env_file="/nonexistent/.env")


def test_daemon_settings_defaults() -> None:
    config = DaemonConfig.load(_env())
    assert config.schedule == "*/10 * * * *"
    assert config.timezone == UTC and config.run_on_start is True
    assert config.grace == 30 and config.http_port == 9090 and config.http_host == "127.0.0.1"


def test_timezone_comes_from_filesync_setting_then_tz() -> None:
    assert DaemonConfig.load(_env(TZ="Asia/Tokyo")).timezone == ZoneInfo("Asia/Tokyo")
    assert DaemonConfig.load(_env(TZ=":Europe/Paris")).timezone == ZoneInfo("Europe/Paris")
    both = _env(TZ="Asia/Tokyo", FILESYNC_TIMEZONE="America/New_York")
    assert DaemonConfig.load(both).timezone == ZoneInfo("America/New_York")


@pytest.mark.parametrize(("name", "value"), [
    ("FILESYNC_SCHEDULE", "every ten minutes"),
    ("FILESYNC_TIMEZONE", "Mars/Olympus"),
    ("TZ", "Nowhere/Town"),
    ("FILESYNC_HTTP_PORT", "70000"),
    ("FILESYNC_SHUTDOWN_GRACE", "-1"),
    ("FILESYNC_RUN_ON_START", "maybe"),
])
def test_bad_daemon_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        DaemonConfig.load(_env(**{name: value}))


# --- tick and probe with a stand-in run ------------------------------------------------------------


class _Ledger:
    def __init__(self) -> None:
        self.down = False

    def ping(self) -> None:
        if self.down:
            raise LedgerUnavailable("PostgreSQL is unreachable: connection refused")


class _App:
    def __init__(self) -> None:
        self.ledger = _Ledger()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _daemon(run: Any, *, schedule: str = "*/1 * * * * *", grace: float = 5.0) -> tuple[Daemon, _App]:
    app = _App()
    config = DaemonConfig(schedule=schedule, timezone=UTC, run_on_start=True, grace=grace,
                          http_host="127.0.0.1", http_port=0)
    daemon = Daemon(_env(), config, build=lambda env: app, run=run)  # type: ignore[arg-type,return-value]
    return daemon, app


def _wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_run_that_raises_is_recorded_and_the_schedule_goes_on() -> None:
    calls: list[int] = []

    def run(app: Any, **kw: Any) -> RunSummary:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return RunSummary(run_id=len(calls), copied=2)

    daemon, _ = _daemon(run)
    errors_before = metrics.ticks_total.labels("error")._value.get()
    daemon.start()
    try:
        _wait_for(lambda: len(calls) >= 2)
    finally:
        daemon.shutdown()
    assert metrics.ticks_total.labels("error")._value.get() == errors_before + 1
    assert daemon.last_run is not None and daemon.last_run["result"] == "ok"


def test_ticks_during_a_long_run_are_skipped_not_queued() -> None:
    active = 0
    overlaps = 0
    runs = 0
    release = threading.Event()
    lock = threading.Lock()

    def run(app: Any, **kw: Any) -> RunSummary:
        nonlocal active, overlaps, runs
        with lock:
            active += 1
            runs += 1
            overlaps += active > 1
        release.wait(3.5 if runs == 1 else 0)
        with lock:
            active -= 1
        return RunSummary()

    daemon, _ = _daemon(run)
    skipped_before = metrics.ticks_total.labels("skipped")._value.get()
    daemon.start()
    try:
        _wait_for(lambda: metrics.ticks_total.labels("skipped")._value.get() >= skipped_before + 2)
        release.set()
        _wait_for(lambda: runs >= 2)
        runs_after_release = runs
    finally:
        daemon.shutdown()
    assert overlaps == 0
    # the ticks skipped during the first run were not queued up behind it
    assert runs_after_release == 2


def test_shutdown_waits_for_the_run_then_aborts_after_the_grace_period() -> None:
    seen: dict[str, bool] = {}
    started = threading.Event()

    def run(app: Any, *, stop: threading.Event, abort: threading.Event, **_: Any) -> RunSummary:
        started.set()
        stop.wait()
        seen["stopped"] = True
        abort.wait(20)  # a transfer that outlives the grace period
        seen["aborted"] = abort.is_set()
        return RunSummary(interrupted=True)

    daemon, _ = _daemon(run, schedule="0 0 1 1 *", grace=0.5)
    daemon.start()
    started.wait(10)
    daemon.on_signal(15, None)
    assert daemon.shutdown() is True
    assert seen == {"stopped": True, "aborted": True}
    assert daemon.last_run is not None and daemon.last_run["result"] == "interrupted"


def test_probe_reports_database_and_scheduler_state() -> None:
    daemon, app = _daemon(lambda app, **kw: RunSummary(), schedule="0 0 1 1 *")
    healthy, body = daemon.probe()
    assert not healthy and body["reason"] == "scheduler is not running"
    daemon.start()
    try:
        _wait_for(lambda: daemon.last_run is not None)
        healthy, body = daemon.probe()
        assert healthy and body["status"] == "ok" and body["scheduler"] == "alive"
        app.ledger.down = True
        healthy, body = daemon.probe()
        assert not healthy and "database unreachable" in body["reason"] and body["database"] == "unreachable"
    finally:
        daemon.shutdown()
    app.ledger.down = False
    healthy, body = daemon.probe()
    assert not healthy and body["scheduler"] == "stopped"


def test_probe_gives_up_on_a_hung_database() -> None:
    daemon, app = _daemon(lambda app, **kw: RunSummary(), schedule="0 0 1 1 *")
    daemon.ping_timeout = 0.2
    hang = threading.Event()
    app.ledger.ping = lambda: hang.wait(10)  # type: ignore[method-assign]
    daemon.start()
    try:
        healthy, body = daemon.probe()
    finally:
        hang.set()
        daemon.shutdown()
    assert not healthy and "did not answer" in body["reason"]


def test_probe_fails_while_runs_cannot_do_their_work_and_passes_after_one_that_does() -> None:
    outcomes: list[BaseException | RunSummary] = [
        ConfigError("FILESYNC_APP_TABLE='File' is invalid: no such table"),
        LedgerUnavailable("PostgreSQL is unreachable: connection refused"),
        SourceUnavailable("bucket media is unreachable"),
        RunSummary(copied=3, failed=2),
        RunSummary(interrupted=True),
    ]

    def run(app: Any, **kw: Any) -> RunSummary:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    daemon, _ = _daemon(run, schedule="0 0 1 1 *")  # one run at start; the test ticks the others
    daemon.start()
    try:
        _wait_for(lambda: daemon.last_run is not None)
        healthy, body = daemon.probe()
        assert not healthy and body["status"] == "unavailable" and body["database"] == "ok"
        assert body["reason"] == ("last run failed (error): ConfigError: FILESYNC_APP_TABLE='File' is invalid: "
                                  "no such table")
        assert body["failing_runs"] == 1 and body["failing_since"] == body["last_run"]["started"]
        first_failure = body["failing_since"]

        daemon.tick()
        healthy, body = daemon.probe()
        assert not healthy and body["reason"].startswith("last run failed (database_unavailable): PostgreSQL")
        assert body["failing_runs"] == 2 and body["failing_since"] == first_failure

        daemon.tick()
        healthy, body = daemon.probe()
        assert not healthy and body["reason"] == "last run failed (source_unavailable): bucket media is unreachable"
        assert body["failing_runs"] == 3

        daemon.tick()  # some files failed: the run got through, the daemon is healthy
        healthy, body = daemon.probe()
        assert healthy and body["status"] == "ok" and body["last_run"]["result"] == "failed"
        assert "failing_runs" not in body and daemon.failing_runs == 0

        daemon.tick()
        healthy, body = daemon.probe()
        assert healthy and body["last_run"]["result"] == "interrupted"
    finally:
        daemon.shutdown()


def test_a_run_that_stopped_a_destination_makes_the_daemon_unhealthy() -> None:
    from filesync.daemon import _result
    from filesync.health import run_problem

    refused = RunSummary(stopped={"cloudflare-images": "credentials refused; check CLOUDFLARE_API_TOKEN"})
    assert _result(refused) == "stopped"
    assert _result(RunSummary(failed=1)) == "failed"
    problem = run_problem({"result": "stopped", "error": "cloudflare-images: check CLOUDFLARE_API_TOKEN"})
    assert problem is not None and "CLOUDFLARE_API_TOKEN" in problem
    assert run_problem({"result": "failed"}) is None  # some files failing is still a working daemon
