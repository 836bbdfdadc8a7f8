"""Two `filesync daemon` replicas on one database and one schedule, as deploy/kubernetes runs them.

Both start at once with FILESYNC_RUN_ON_START and tick every 5 s against moto's S3 and the fake
Cloudflare. Several runs at once must be harmless (every image reaches Cloudflare in exactly one POST,
every row is flagged) and efficient: the enqueue step (a scan of the app's table) is not repeated by every
replica at the same second, because it runs under a PostgreSQL advisory lock that the other replica skips
on (the `enqueue` event's `skipped`), after a random start delay of up to FILESYNC_START_JITTER seconds.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync.testing.fakes.base import free_port
from filesync.testing.fakes.cloudflare import FakeCloudflare
from tests.acceptance.daemon_support import Daemon, wait_until
from tests.conftest import S3Server, cloudflare_env
from tests.media import image_bytes

TOKEN = "cf-token-two-daemons-0xSECRET"
N_IMAGES = 40
IDS = [f"img-{n:03d}" for n in range(N_IMAGES)]
COLORS = ("teal", "orange", "navy", "olive", "maroon", "purple", "silver", "gold")


class CountingCloudflare(FakeCloudflare):
    """The fake Cloudflare, counting every Images upload (POST) by its custom id, duplicates included."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.posts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    async def _store_image(self, form: Any) -> Any:
        with self._count_lock:
            self.posts[str(form.get("id"))] += 1
        return await super()._store_image(form)


@pytest.fixture
def cf() -> Iterator[CountingCloudflare]:
    with CountingCloudflare(token=TOKEN) as fake:
        yield fake  # type: ignore[misc]


class Replica(Daemon):
    """A Daemon launched without waiting, so both replicas start together."""

    def launch(self) -> Replica:
        self.port = self.port or free_port()
        self.env.setdefault("FILESYNC_HTTP_PORT", str(self.port))
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "filesync", "daemon"], env=self.env,
                                         cwd=self.cwd, stdout=out, stderr=err)
        return self

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), printed for sizing the pods' requests."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def started(self) -> Replica:
        assert self.proc is not None
        wait_until(lambda: self.events("daemon_started") or self.proc.poll() is not None, 60, "daemon start")
        assert self.proc.poll() is None, f"daemon exited early: {self.stderr()}"
        return self


def _flags(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] for r in conn.execute('SELECT id, "copiedToCloudflare" FROM "File"')}


def _run_two_replicas(tmp_path: Path, database_url: str, s3: S3Server, cf: CountingCloudflare) -> list[Replica]:
    """Seed the images, run both replicas until every row is flagged and each has ticked 4 times, stop them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n, file_id in enumerate(IDS):
            s3.put(f"photos/{file_id}.jpg", image_bytes("JPEG", (64 + n, 48), COLORS[n % len(COLORS)]),
                   "image/jpeg")
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (file_id, f"photos/{file_id}.jpg"))
    # Slow answers keep the first runs going for several seconds, so both replicas claim while the other does.
    cf.slow_next(0.25, times=10_000, method="POST")

    replicas = []
    for n in (1, 2):
        home = tmp_path / f"replica-{n}"
        home.mkdir()
        env = cloudflare_env(
            database_url, s3, cf, TOKEN,
            FILESYNC_SCHEDULE="*/5 * * * * *", FILESYNC_RUN_ON_START="true", FILESYNC_START_JITTER="2",
            FILESYNC_CONCURRENCY="2", FILESYNC_CLAIM_BATCH="2", FILESYNC_CLOUDFLARE_RPS="500",
            FILESYNC_REQUEST_MAX_WAIT="2", FILESYNC_WORKER_ID=f"replica-{n}", FILESYNC_HTTP_HOST="127.0.0.1",
            FILESYNC_LOG_FILE=str(home / "filesync.log"), FILESYNC_HOME=str(home),
        )
        replicas.append(Replica(env, home))
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.started()
        wait_until(lambda: _flags(database_url) == dict.fromkeys(IDS, True), 180, "every row flagged")
        # A few more ticks each, with nothing left to copy: enqueue keeps being attempted on the schedule.
        for replica in replicas:
            replica.wait_events("enqueue", 4, 90)
        for n, replica in enumerate(replicas, 1):
            print(f"replica {n}: peak RSS {replica.peak_rss_mib():.0f} MiB")
            replica.signal(signal.SIGTERM)
        for replica in replicas:
            assert replica.wait(60) == 0, replica.stderr()
    finally:
        for replica in replicas:
            replica.kill()
    return replicas


def test_two_replicas_copy_every_file_exactly_once(
    tmp_path: Path, database_url: str, s3: S3Server, cf: CountingCloudflare
) -> None:
    replicas = _run_two_replicas(tmp_path, database_url, s3, cf)
    assert cf.posts == Counter(dict.fromkeys(IDS, 1))  # one POST per image, whichever replica sent it
    assert sorted(i.key for i in cf.stored_images()) == IDS
    assert _flags(database_url) == dict.fromkeys(IDS, True)
    copied_by = [sum(r.get("copied", 0) for r in replica.events("run_finished")) for replica in replicas]
    print(f"copied by each replica: {copied_by}")
    assert sum(copied_by) == N_IMAGES
    for replica in replicas:
        assert replica.events("run_finished"), "a replica never finished a run"


def test_two_replicas_do_not_run_the_enqueue_step_in_the_same_second(
    tmp_path: Path, database_url: str, s3: S3Server, cf: CountingCloudflare
) -> None:
    replicas = _run_two_replicas(tmp_path, database_url, s3, cf)
    enqueues: list[tuple[str, int, dict[str, Any]]] = []
    for n, replica in enumerate(replicas):
        events = replica.events("enqueue")
        assert events, f"replica {n + 1} never logged an enqueue event"
        for event in events:
            assert isinstance(event["skipped"], bool) and isinstance(event["added"], int), event
            assert event["worker"]
            enqueues.append((str(event["timestamp"])[:19], n, event))
    assert len({e[2]["worker"] for e in enqueues}) == 2
    ran = [(second, n) for second, n, event in enqueues if not event["skipped"]]
    together = sorted({second for (second, a), (other, b) in itertools.combinations(ran, 2)
                       if second == other and a != b})
    assert not together, f"both replicas ran enqueue at {together}: {ran}"
    # Every row was enqueued once in all: later passes found nothing new.
    assert sum(event["added"] for _, _, event in enqueues if not event["skipped"]) == N_IMAGES
