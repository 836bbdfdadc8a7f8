"""`filesync daemon` as a real subprocess: schedule, no overlap, SIGTERM mid-transfer, health, metrics,
logs."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from filesync.testing.fakes.base import ASGIApp, Message, Receive, Scope, Send
from filesync.testing.fakes.bunny import FakeBunny
from tests.acceptance.daemon_support import (
    REQUIRED_FIELDS,
    Daemon,
    assert_no_secrets,
    base_env,
    metric_value,
    query,
    seed,
    wait_until,
)

MB = 1024 * 1024


class SlowBunny(FakeBunny):
    """Bunny storage whose PUTs are read at `rate` bytes a second, so a transfer is in flight for a while."""

    name = "slow-bunny"

    def __init__(self) -> None:
        super().__init__()
        self.rate: float | None = None
        self.received = 0

    def build_app(self) -> ASGIApp:
        inner = super().build_app()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "PUT":
                await inner(scope, receive, send)
                return

            async def slow_receive() -> Message:
                message = await receive()
                body = message.get("body", b"")
                self.received += len(body)
                if self.rate and body:
                    await asyncio.sleep(len(body) / self.rate)
                return message

            await inner(scope, slow_receive, send)

        return app


def _copied_rows(url: str) -> int:
    return int(query(url, 'SELECT count(*) FROM "File" WHERE "copiedToCloudflare"')[0][0])


def _claimed_now(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM filesync.files WHERE claimed_until > now()")[0][0])


def _check_log_shape(records: list[dict[str, Any]]) -> None:
    assert records, "the log file is empty"
    for record in records:
        for name in REQUIRED_FIELDS:
            assert name in record, f"{name} missing in {record}"
        assert str(record["timestamp"]).endswith("Z")
    for record in records:
        if record["event"] == "upload_finished":
            for name in ("run_id", "file_id", "sink", "bytes", "duration_ms", "status"):
                assert name in record, f"{name} missing in {record}"
        if record["event"] == "run_finished":
            for name in ("run_id", "copied", "skipped", "failed", "duration_ms"):
                assert name in record, f"{name} missing in {record}"


def _runs_alternate(records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """run_started/run_finished pairs in log order; fails if a run starts before the previous ended."""
    open_run: int | None = None
    pairs = []
    for record in records:
        if record["event"] == "run_started":
            assert open_run is None, f"run {record['run_id']} started while run {open_run} was going"
            open_run = record["run_id"]
        elif record["event"] == "run_finished":
            assert record["run_id"] == open_run
            pairs.append((open_run, record["run_id"]))
            open_run = None
    return pairs


def _set_connections(server_url: str, url: str, allowed: bool) -> None:
    """Make the test database refuse (or accept again) every connection: PostgreSQL is 'down' for it."""
    dbname = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))


def test_daemon_runs_on_schedule_serves_health_and_metrics_and_keeps_secrets(
    tmp_path: Path, database_url: str, pg_server: str
) -> None:
    files = seed(database_url, tmp_path / "src", {"a1": 2000, "a2": 3000, "a3": 4000})
    env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="*/2 * * * * *")
    daemon = Daemon(env, tmp_path)
    try:
        daemon.start()
        first = daemon.wait_events("run_finished", 1, 60)[0]
        assert first["copied"] == 3
        files |= seed(database_url, tmp_path / "src", {"b1": 5000, "b2": 6000}, start=3)
        wait_until(lambda: _copied_rows(database_url) == 5, 60, "the files added later to be copied")
        daemon.wait_events("run_finished", 3, 60)

        status, body = daemon.http("/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["scheduler"] == "alive"
        assert health["database"] == "ok" and health["last_run"]["result"] in {"ok", "failed"}

        status, body = daemon.http("/metrics")
        text = body.decode()
        copied_files = sorted(p.name for p in (tmp_path / "dst").rglob("*.png"))
        assert status == 200 and len(copied_files) == 5
        assert metric_value(text, "filesync_files_total", sink="local", outcome="copied") == len(copied_files)
        assert metric_value(text, "filesync_bytes_sent_total", sink="local") == sum(map(len, files.values()))
        assert metric_value(text, "filesync_runs_total", result="ok") >= 2
        assert metric_value(text, "filesync_last_success_timestamp_seconds") > 0
        assert metric_value(text, "filesync_backlog_files") == 0

        # The database goes away: /healthz says so, ticks fail with one clear line, the schedule holds.
        _set_connections(pg_server, database_url, allowed=False)
        status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(daemon.http("/healthz")),
                                  60, "/healthz 503")
        assert "database" in json.loads(body)["reason"]
        down = daemon.wait_events("database_unavailable", 1, 60)[0]
        assert down["level"] == "error" and down["next_run"]
        _set_connections(pg_server, database_url, allowed=True)
        wait_until(lambda: daemon.http("/healthz")[0] == 200, 60, "/healthz 200 again")
        finished_before = len(daemon.events("run_finished"))
        daemon.wait_events("run_finished", finished_before + 1, 60)

        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        _set_connections(pg_server, database_url, allowed=True)

    records = daemon.records()
    _check_log_shape(records)
    assert len(_runs_alternate(records)) >= 3
    assert records[-1]["event"] == "daemon_stopped"
    assert_no_secrets(daemon.log.read_text(), daemon.stdout(), daemon.stderr())
    # stdout is not a TTY here: it carries the same JSON events
    printed = [json.loads(line)["event"] for line in daemon.stdout().splitlines()]
    assert printed == [r["event"] for r in records]


def _bunny_env(tmp_path: Path, database_url: str, fake: FakeBunny, **extra: str) -> dict[str, str]:
    return base_env(
        tmp_path, database_url,
        FILESYNC_ROUTES="image/*=bunny", BUNNY_ENDPOINT=fake.url, BUNNY_STORAGE_ZONE=fake.zone,
        BUNNY_API_KEY=fake.access_key, FILESYNC_CONCURRENCY="1", **extra,
    )


def test_slow_runs_never_overlap_and_skipped_ticks_are_logged(tmp_path: Path, database_url: str) -> None:
    seed(database_url, tmp_path / "src", {"s1": 3 * MB, "s2": 3 * MB, "s3": 3 * MB})
    with SlowBunny() as fake:
        fake.rate = 2 * MB
        daemon = Daemon(_bunny_env(tmp_path, database_url, fake, FILESYNC_SCHEDULE="* * * * * *"), tmp_path)
        try:
            daemon.start()
            daemon.wait_events("tick_skipped", 2, 90)
            daemon.wait_events("run_finished", 2, 120)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(60) == 0
        finally:
            daemon.kill()
        assert sorted(e.length for e in (fake.entry(f"s{i}.png") for i in (1, 2, 3)) if e) == [3 * MB] * 3

    records = daemon.records()
    _check_log_shape(records)
    assert len(_runs_alternate(records)) >= 2
    rows = query(database_url, "SELECT started_at, finished_at FROM filesync.runs ORDER BY started_at")
    assert len(rows) >= 2
    for (_, end), (start, _) in itertools.pairwise(rows):
        assert end is not None and end <= start, "two runs overlapped in the runs table"


def test_sigterm_mid_transfer_exits_0_hands_the_file_back_and_a_later_run_copies_it_once(
    tmp_path: Path, database_url: str
) -> None:
    size = 24 * MB
    files = seed(database_url, tmp_path / "src", {"big": size})
    grace = 2.0
    with SlowBunny() as fake:
        fake.rate = 1 * MB
        env = _bunny_env(tmp_path, database_url, fake, FILESYNC_SCHEDULE="0 0 1 1 *",
                         FILESYNC_SHUTDOWN_GRACE=str(grace))
        daemon = Daemon(env, tmp_path)
        try:
            daemon.start()
            wait_until(lambda: fake.received > 0, 60, "the PUT to start")
            assert _claimed_now(database_url) == 1
            signalled = time.monotonic()
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(grace + 30)
            took = time.monotonic() - signalled
        finally:
            daemon.kill()
        assert code == 0, daemon.stderr()
        assert fake.entry("big.png") is None, "an interrupted upload must leave nothing stored"
        assert _claimed_now(database_url) == 0
        assert query(database_url, "SELECT state, claimed_by FROM filesync.files") == [("pending", None)]
        assert _copied_rows(database_url) == 0
        events = [r["event"] for r in daemon.records()]
        assert "grace_expired" in events and events[-1] == "daemon_stopped"
        assert took < grace + 30

        # A later run (no throttle) copies it, exactly once.
        fake.rate = None
        again = Daemon({**env, "FILESYNC_SCHEDULE": "0 0 1 1 *"}, tmp_path)
        try:
            again.start()
            wait_until(lambda: _copied_rows(database_url) == 1, 120, "the file to be copied")
            again.signal(signal.SIGTERM)
            assert again.wait(60) == 0
        finally:
            again.kill()
        entry = fake.entry("big.png")
        assert entry is not None and entry.puts == 1 and entry.length == size
        assert fake.read("big.png") == files["big"]
    assert_no_secrets(daemon.log.read_text(), daemon.stdout(), daemon.stderr())


def test_second_signal_exits_at_once_and_the_ledger_still_holds(tmp_path: Path, database_url: str) -> None:
    seed(database_url, tmp_path / "src", {"k1": 24 * MB})
    with SlowBunny() as fake:
        fake.rate = 1 * MB
        env = _bunny_env(tmp_path, database_url, fake, FILESYNC_SCHEDULE="0 0 1 1 *",
                         FILESYNC_SHUTDOWN_GRACE="300")
        daemon = Daemon(env, tmp_path)
        try:
            daemon.start()
            wait_until(lambda: fake.received > 0, 60, "the PUT to start")
            daemon.signal(signal.SIGTERM)
            daemon.wait_events("shutdown_requested", 1, 30)
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(30)  # far less than the 300 s grace
        finally:
            daemon.kill()
        assert code == 128 + signal.SIGTERM
        assert _copied_rows(database_url) == 0 and fake.entry("k1.png") is None

        fake.rate = None
        again = Daemon(dict(env), tmp_path)
        try:
            again.start()
            wait_until(lambda: _copied_rows(database_url) == 1, 120, "the next daemon to copy the file")
            again.signal(signal.SIGTERM)
            assert again.wait(60) == 0
        finally:
            again.kill()
        entry = fake.entry("k1.png")
        assert entry is not None and entry.puts == 1


def test_bad_setting_stops_the_daemon_before_it_starts(tmp_path: Path, database_url: str) -> None:
    import subprocess
    import sys

    env = base_env(tmp_path, database_url, FILESYNC_SCHEDULE="61 * * * *")
    done = subprocess.run([sys.executable, "-m", "filesync", "daemon"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FILESYNC_SCHEDULE" in done.stderr
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    env = base_env(tmp_path, database_url, FILESYNC_LOG_FILE=str(blocker / "filesync.log"))
    done = subprocess.run([sys.executable, "-m", "filesync", "daemon"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "FILESYNC_LOG_FILE" in done.stderr

