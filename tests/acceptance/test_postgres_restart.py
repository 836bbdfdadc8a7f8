"""Issue 5: PostgreSQL stopped and started in the middle of a run.

A separate PostgreSQL (pgserver's binaries, its own data folder) that the test can stop; the destination
is slow so transfers are in flight when the database goes away. The run either finishes or fails cleanly
(exit 3, "database unavailable", no traceback); no file is flagged without its upload confirmed; the next
run finishes everything with nothing sent twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.postgres import APP_TABLE_DDL
from tests.conftest import S3Server, cloudflare_env
from tests.media import image_bytes, video_bytes

TOKEN = "cf-token-pg-restart-0xSECRET"
N_IMAGES = 12
N_VIDEOS = 2
SLOW_SECONDS = 1.5


class StoppablePostgres:
    """pgserver's PostgreSQL in a folder of ours, stopped and started with pg_ctl on the same socket."""

    def __init__(self, root: Path) -> None:
        import pgserver
        from pgserver._commands import POSTGRES_BIN_PATH

        self._pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        self.server = pgserver.get_server(str(root / "pgdata"), cleanup_mode="stop")  # type: ignore[attr-defined]
        info = self.server.get_postmaster_info()
        self.url = str(self.server.get_uri())
        self.pgdata = Path(self.server.pgdata)
        self.socket_dir = str(info.socket_dir)
        self.user = self.server.system_user

    def _ctl(self, *args: str) -> None:
        subprocess.run([self._pg_ctl, "-D", str(self.pgdata), "-w", *args], check=True, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, as when a managed database restarts."""
        self._ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def close(self) -> None:
        if self.running():
            self.stop()
        self.server.cleanup()


@pytest.fixture
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppablePostgres]:
    server = StoppablePostgres(tmp_path_factory.mktemp("pg-restart"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(token=TOKEN) as fake:
        yield fake  # type: ignore[misc]


def env_for(url: str, s3: S3Server, cf: FakeCloudflare) -> dict[str, str]:
    return cloudflare_env(
        url, s3, cf, TOKEN,
        FILESYNC_CLOUDFLARE_RPS="1000",
        FILESYNC_CONCURRENCY="3",
        FILESYNC_LEASE_SECONDS="10",
        FILESYNC_RETRY_BACKOFF_SECONDS="0.5",
        FILESYNC_REQUEST_MAX_WAIT="1",
        FILESYNC_WORKER_ID="pg-restart",
    )


def seed(url: str, s3: S3Server) -> list[str]:
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(APP_TABLE_DDL)
        for n in range(N_IMAGES):
            s3.put(f"p/{n}.jpg", image_bytes("JPEG", color="olive"), "image/jpeg")
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (f"img-{n:02d}", f"p/{n}.jpg"))
            ids.append(f"img-{n:02d}")
        for n in range(N_VIDEOS):
            s3.put(f"v/{n}.mp4", video_bytes(4096), "video/mp4")
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (f"vid-{n}", f"v/{n}.mp4"))
            ids.append(f"vid-{n}")
    return ids


def flags(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] for r in conn.execute('SELECT id, "copiedToCloudflare" FROM "File"')}


def at_destination(cf: FakeCloudflare) -> Counter[str]:
    """File id -> objects holding its bytes: images by custom id, complete videos by their meta name."""
    held: Counter[str] = Counter(i.key for i in cf.stored_images())
    held.update(v.meta.get("name", "?") for v in cf.videos(include_pending=False))
    return held


def logged_events(text: str) -> Counter[str]:
    events: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            event: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events[str(event.get("event"))] += 1
    return events


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


#: The pool waits up to 15 s for a connection: a short outage is ridden out; one a little longer than that
#: fails the marks of transfers in flight but not the next claim; a long one fails the run (exit 3).
@pytest.mark.parametrize("outage", [2.0, 25.0, 45.0], ids=["short", "longer-than-pool-wait", "long"])
def test_postgres_restart_mid_run_loses_and_duplicates_nothing(
    pg: StoppablePostgres, s3: S3Server, cf: FakeCloudflare, outage: float
) -> None:
    ids = seed(pg.url, s3)
    env = env_for(pg.url, s3, cf)
    cf.slow_next(SLOW_SECONDS, method="POST", path_contains="/images/v1", times=1000)
    cf.slow_next(SLOW_SECONDS, method="PATCH", times=1000)
    proc = subprocess.Popen([sys.executable, "-m", "filesync", "run"], env=env, cwd="/", text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: sum(flags(pg.url).values()) >= 2, 60, "two files to be copied")
        pg.stop()  # transfers are in flight: their marks have no database to go to
        time.sleep(outage)
        pg.start()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    cf.calm()

    first = flags(pg.url)
    held = at_destination(cf)
    events = logged_events(stdout)
    print(f"\n{outage} s outage: exit {proc.returncode}, {sum(first.values())} of {len(ids)} flagged after the "
          f"run, {sum(held.values())} at the destination; "
          f"events {dict(events)}\nstderr: {stderr.strip()[-500:]}")
    assert proc.returncode in (0, 1, 3), stderr
    if proc.returncode == 3:
        assert "database unavailable" in stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert events["file_crashed"] == 0
    # nothing flagged without its upload confirmed at the destination
    assert all(held[f] == 1 for f, copied in first.items() if copied), (first, held)
    assert TOKEN not in stdout + stderr
    if not all(first.values()):  # exit 0 promises every due file was handled
        assert proc.returncode != 0, f"exit 0 with {sorted(f for f, v in first.items() if not v)} not marked"

    second = subprocess.run([sys.executable, "-m", "filesync", "run"], env=env, cwd="/", text=True,
                            capture_output=True, timeout=180)

    assert second.returncode == 0, second.stdout[-2000:] + second.stderr
    assert flags(pg.url) == dict.fromkeys(ids, True)
    final = at_destination(cf)
    assert set(final) == set(ids) and all(n == 1 for n in final.values()), final
    assert [v.meta.get("name") for v in cf.videos() if not v.ready] == []
    with psycopg.connect(pg.url) as conn:
        left = conn.execute("SELECT file_id, state, claimed_by FROM filesync.files "
                            "WHERE state <> 'done' OR claimed_by IS NOT NULL").fetchall()
    assert left == []

