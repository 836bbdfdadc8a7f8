"""The daemon tells the truth (issue 9): /healthz fails while runs cannot do their work, SIGHUP reopens the
log instead of killing the process, a killed run is marked abandoned, and a log that cannot be written gives
one warning on stderr instead of a traceback per event. `filesync daemon` as a real subprocess throughout."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path
from typing import Any

import psycopg

from tests.acceptance.daemon_support import (
    CF_TOKEN,
    Daemon,
    assert_no_secrets,
    base_env,
    query,
    seed,
    wait_until,
    without_root_override,
)
from tests.acceptance.test_daemon import SlowBunny

MB = 1024 * 1024


def _execute(url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def _health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    status, body = daemon.http("/healthz")
    return status, json.loads(body)


def _wait_health(daemon: Daemon, status: int, what: str) -> dict[str, Any]:
    """The /healthz body once it answers `status` (the schedule decides when the next run ends)."""
    def check() -> dict[str, Any] | None:
        code, body = _health(daemon)
        return body if code == status else None
    body: dict[str, Any] = wait_until(check, 60, what)
    return body


def test_healthz_fails_while_runs_cannot_work_and_recovers_after_one_that_does(
    tmp_path: Path, database_url: str
) -> None:
    seed(database_url, tmp_path / "src", {"h1": 2000})
    _execute(database_url, 'ALTER TABLE "File" RENAME TO "File_away"')  # the app's table is missing
    daemon = Daemon(base_env(tmp_path, database_url, FILESYNC_SCHEDULE="*/2 * * * * *"), tmp_path)
    try:
        daemon.start()
        body = _wait_health(daemon, 503, "/healthz 503 while the app's table is missing")
        assert body["status"] == "unavailable" and body["database"] == "ok"
        assert body["reason"].startswith("last run failed (error)") and "File" in body["reason"]
        assert body["last_run"]["result"] == "error" and body["failing_runs"] >= 1
        daemon.wait_events("run_failed", 2, 60)  # a setting the run found unusable: one line, no traceback
        assert _health(daemon)[1]["failing_runs"] >= 2, "every failing run counts"

        _execute(database_url, 'ALTER TABLE "File_away" RENAME TO "File"')
        body = _wait_health(daemon, 200, "/healthz 200 once a run gets through")
        assert body["status"] == "ok" and body["last_run"]["result"] == "ok" and "failing_runs" not in body

        # The source folder disappears: the run cannot reach its input.
        (tmp_path / "src").rename(tmp_path / "src-away")
        body = _wait_health(daemon, 503, "/healthz 503 while the source folder is missing")
        assert body["reason"].startswith("last run failed (source_unavailable)")
        (tmp_path / "src-away").rename(tmp_path / "src")

        # A file that cannot be copied fails that file, not the daemon.
        _execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', ("gone", "gone.png"))
        status, body = wait_until(lambda: (lambda r: r if r[1]["last_run"]["result"] == "failed" else None)(
            _health(daemon)), 60, "a run with a failed file")
        assert status == 200 and body["status"] == "ok" and body["last_run"]["failed"] == 1

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
    assert_no_secrets(daemon.log.read_text(), daemon.stdout(), daemon.stderr())


def test_sighup_reopens_the_log_file_and_the_daemon_goes_on(tmp_path: Path, database_url: str) -> None:
    seed(database_url, tmp_path / "src", {"s1": 2000})
    env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="0 0 1 1 *")  # one run, at start
    daemon = Daemon(env, tmp_path)
    try:
        daemon.start()
        daemon.wait_events("run_finished", 1, 60)
        moved = daemon.log.with_name("filesync.log.1")
        daemon.log.rename(moved)  # what logrotate does before its postrotate `kill -HUP`
        daemon.signal(signal.SIGHUP)
        hup = daemon.wait_events("sighup", 1, 30)[0]  # read from the new file under the old name
        assert hup["level"] == "info" and hup["pid"] == daemon.proc.pid  # type: ignore[union-attr]
        for _ in range(3):
            daemon.signal(signal.SIGHUP)
        daemon.wait_events("sighup", 2, 30)
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert _health(daemon)[0] == 200
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
    before = [json.loads(line)["event"] for line in moved.read_text().splitlines()]
    assert "run_finished" in before and "sighup" not in before
    assert daemon.records()[-1]["event"] == "daemon_stopped"
    assert "Traceback" not in daemon.stderr()


def test_a_killed_run_is_marked_abandoned_by_the_next_run(tmp_path: Path, database_url: str) -> None:
    seed(database_url, tmp_path / "src", {"k1": 8 * MB})
    fake = SlowBunny()
    with fake:
        fake.rate = 1 * MB
        env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="0 0 1 1 *", FILESYNC_ROUTES="image/*=bunny",
                       BUNNY_ENDPOINT=fake.url, BUNNY_STORAGE_ZONE=fake.zone, BUNNY_API_KEY=fake.access_key)
        daemon = Daemon(env, tmp_path)
        try:
            daemon.start()
            wait_until(lambda: fake.received > 0, 60, "the PUT to start")
            daemon.signal(signal.SIGKILL)
            assert daemon.wait(30) == -signal.SIGKILL
        finally:
            daemon.kill()
        assert query(database_url, "SELECT status FROM filesync.runs") == [("running",)]

        fake.rate = None
        again = Daemon(dict(env), tmp_path)
        try:
            again.start()
            again.wait_events("run_finished", 1, 60)  # the killed run logged none
            again.signal(signal.SIGTERM)
            assert again.wait(60) == 0
        finally:
            again.kill()
    rows = query(database_url, "SELECT status, finished_at, error FROM filesync.runs ORDER BY id")
    assert rows[0][0] == "abandoned" and rows[0][1] is None and "abandoned" in rows[0][2]
    assert rows[1][0] == "ok"


def test_a_log_file_that_cannot_be_written_gives_one_warning_and_the_daemon_goes_on(
    tmp_path: Path, database_url: str
) -> None:
    seed(database_url, tmp_path / "src", {"f1": 2000})
    env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="* * * * * *", FILESYNC_LOG_FILE="/dev/full")
    daemon = Daemon(env, tmp_path)  # events are read from stdout, which carries the same lines
    try:
        daemon.start()
        daemon.wait_events("run_finished", 3, 60)
        assert "Traceback" not in daemon.stderr() and "Logging error" not in daemon.stderr()
        daemon.signal(signal.SIGHUP)
        daemon.wait_events("sighup", 1, 30)
        daemon.wait_events("run_finished", 4, 60)
        assert _health(daemon)[0] == 200
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
    err = daemon.stderr()
    assert err.splitlines() == [
        "filesync: cannot write the log file /dev/full (No space left on device); going on without it, "
        "its events are lost until it can be written again"
    ], err
    assert daemon.records()[-1]["event"] == "daemon_stopped"


def test_a_log_folder_made_read_only_after_start_keeps_the_log_going_with_one_warning(
    tmp_path: Path, database_url: str
) -> None:
    seed(database_url, tmp_path / "src", {"r1": 2000})
    folder = tmp_path / f"logs-{CF_TOKEN}"  # a secret in the path: the warning must not show it
    env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="* * * * * *", FILESYNC_LOG_MAX_BYTES="4000",
                   FILESYNC_LOG_FILE=str(folder / "filesync.log"))
    daemon = Daemon(env, tmp_path, wrapper=without_root_override())
    try:
        daemon.start()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        names = sorted(p.name for p in folder.iterdir())
        wait_until(lambda: "cannot rotate" in daemon.stderr(), 90, "a rotation the folder refuses")
        size, finished = daemon.log.stat().st_size, len(daemon.events("run_finished"))
        daemon.wait_events("run_finished", finished + 2, 60)
        assert daemon.log.stat().st_size > max(size, 4000), "events go on into the file past its size"
        daemon.signal(signal.SIGHUP)  # reopening the existing file needs no write on the folder
        daemon.wait_events("sighup", 1, 30)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == names
    err = daemon.stderr()
    assert err.splitlines() == [
        f"filesync: cannot rotate the log file {tmp_path}/logs-***/filesync.log (Permission denied); "
        "writing on past FILESYNC_LOG_MAX_BYTES, trying again every 60 s"
    ], err
    assert_no_secrets(err)
    assert daemon.records()[-1]["event"] == "daemon_stopped"
