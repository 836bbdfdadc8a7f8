"""Leases on the ledger (issue 5): an expired lease moves to another worker and the stalled worker's late
mark is refused; parallel claimers never share a file; batches respect their limit; a heartbeat keeps a
lease alive; claims of a dead process on this host are released, those of a live one are not.

In-process against a real PostgreSQL, one Database (pool) per simulated worker, as separate processes have.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import psycopg
import pytest

from filesync.settings import AppTable
from filesync.errors import LeaseLost
from filesync.ledger import Database, Ledger, claim_token, host_prefix
from filesync.model import RemoteObject

APP = AppTable(table=("File",), id="id", path="path", date_taken="dateTaken", gps="gpsCoordinates",
               copied="copiedToCloudflare")
SINK = "cloudflare-images"


@pytest.fixture
def ledgers(database_url: str) -> Iterator[Callable[[], Ledger]]:
    """A factory of ledgers over their own pools on the test database (migrated once)."""
    made: list[Ledger] = []

    def make() -> Ledger:
        ledger = Ledger(Database(database_url, max_size=2), "filesync", APP)
        made.append(ledger)
        return ledger

    make().migrate()
    yield make
    for ledger in made:
        ledger.close()


def add_files(url: str, ids: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO "File" (id, path) VALUES (%s, %s)', [(i, f"{i}.jpg") for i in ids])


def db_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def claimed_until(url: str, file_id: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT claimed_until FROM filesync.files WHERE file_id = %s", (file_id,)).fetchone()
    assert row is not None and row[0] is not None
    return row[0]  # type: ignore[no-any-return]


def wait_past(url: str, moment: datetime, timeout: float = 30) -> None:
    """Until the database's clock is past `moment` (lease expiry is judged by the server's now())."""
    deadline = time.monotonic() + timeout
    while db_now(url) <= moment:
        assert time.monotonic() < deadline, f"the database clock did not pass {moment}"
        time.sleep(0.1)


def remote(worker: str) -> RemoteObject:
    return RemoteObject(remote_id=f"img-from-{worker}", url=f"https://cdn.example/{worker}", size=10)


def test_expired_lease_moves_to_another_worker_and_the_late_mark_is_refused(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    add_files(database_url, ["f1"])
    a, b = ledgers(), ledgers()
    a.enqueue()
    worker_a, worker_b = "A@host/1", "B@host/2"

    [task] = a.claim(worker_a, limit=5, lease_seconds=1)
    assert task.file_id == "f1"
    assert b.claim(worker_b, limit=5, lease_seconds=60) == []  # held: nobody else gets it
    wait_past(database_url, claimed_until(database_url, "f1"))  # A stalls past its lease

    [again] = b.claim(worker_b, limit=5, lease_seconds=60)
    assert again.file_id == "f1"
    # A wakes up: every write it tries is refused, and it cannot take the lease back.
    with pytest.raises(LeaseLost):
        a.record_done(worker_a, "f1", SINK, remote("A"), [SINK])
    with pytest.raises(LeaseLost):
        a.save_resume_token(worker_a, "f1", SINK, '{"url": "stale"}')
    with pytest.raises(LeaseLost):
        a.record_failure(worker_a, "f1", error_class="server", status=503, error="late", park=True,
                         retry_in=1)
    with pytest.raises(LeaseLost):
        a.record_skipped(worker_a, "f1", "late")
    assert a.heartbeat(worker_a, ["f1"], 60) == 0
    assert a.release(worker_a, ["f1"]) == 0

    assert b.record_done(worker_b, "f1", SINK, remote("B"), [SINK]) is True

    with psycopg.connect(database_url) as conn:
        assert conn.execute('SELECT "copiedToCloudflare" FROM "File" WHERE id = %s', ("f1",)).fetchone() == (True,)
        transfers = conn.execute("SELECT sink, state, remote_id, attempts, resume_token FROM filesync.transfers "
                                 "WHERE file_id = 'f1'").fetchall()
        file_row = conn.execute("SELECT state, attempts, error, claimed_by FROM filesync.files "
                                "WHERE file_id = 'f1'").fetchone()
    assert transfers == [(SINK, "done", "img-from-B", 1, None)]
    assert file_row == ("done", 0, None, None)


def test_expired_lease_refuses_the_mark_even_when_nobody_took_it(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    add_files(database_url, ["f1"])
    a = ledgers()
    a.enqueue()
    a.claim("A@host/1", limit=1, lease_seconds=1)
    wait_past(database_url, claimed_until(database_url, "f1"))

    with pytest.raises(LeaseLost):
        a.record_done("A@host/1", "f1", SINK, remote("A"), [SINK])

    with psycopg.connect(database_url) as conn:
        assert conn.execute('SELECT "copiedToCloudflare" FROM "File"').fetchone() == (False,)
        assert conn.execute("SELECT count(*) FROM filesync.transfers").fetchone() == (0,)


def test_parallel_claimers_never_get_the_same_file(database_url: str, ledgers: Callable[[], Ledger]) -> None:
    ids = [f"p{n:04d}" for n in range(500)]
    add_files(database_url, ids)
    ledgers().enqueue()
    workers = [ledgers() for _ in range(8)]
    got: dict[int, list[str]] = {n: [] for n in range(8)}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def claimer(n: int) -> None:
        try:
            start.wait()
            while batch := workers[n].claim(f"w{n}@host/{n}", limit=7, lease_seconds=300):
                assert len(batch) <= 7
                got[n].extend(t.file_id for t in batch)
        except BaseException as exc:  # surfaced below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors, errors
    claimed = [file_id for batch in got.values() for file_id in batch]
    assert len(claimed) == 500, f"{len(claimed)} claims for 500 files"
    assert set(claimed) == set(ids)
    assert sum(1 for batch in got.values() if batch) > 1  # the work really was divided
    with psycopg.connect(database_url) as conn:
        owners: dict[str, str | None] = dict(conn.execute("SELECT file_id, claimed_by FROM filesync.files").fetchall())
    for n, batch in got.items():
        assert all(owners[file_id] == f"w{n}@host/{n}" for file_id in batch)


def test_claim_batches_respect_the_limit(database_url: str, ledgers: Callable[[], Ledger]) -> None:
    add_files(database_url, [f"b{n:02d}" for n in range(20)])
    ledger = ledgers()
    ledger.enqueue()

    sizes = [len(ledger.claim("w@host/1", limit=limit, lease_seconds=60)) for limit in (3, 5, 1, 8, 8)]

    assert sizes == [3, 5, 1, 8, 3]
    assert ledger.backlog() == 20  # claimed files stay due: only the lease keeps others off them
    assert ledger.claim("w2@host/2", limit=8, lease_seconds=60) == []


def test_a_heartbeat_keeps_a_lease_alive_past_its_first_expiry(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    add_files(database_url, ["h1", "h2"])
    a, b = ledgers(), ledgers()
    a.enqueue()
    a.claim("A@host/1", limit=2, lease_seconds=1)
    first_expiry = claimed_until(database_url, "h1")

    assert a.heartbeat("A@host/1", ["h1"], 60) == 1  # only h1 is still being worked on
    wait_past(database_url, first_expiry)

    [taken] = b.claim("B@host/2", limit=5, lease_seconds=60)
    assert taken.file_id == "h2"  # the lapsed one moved; the beating one did not
    assert a.record_done("A@host/1", "h1", SINK, remote("A"), [SINK]) is True
    with pytest.raises(LeaseLost):
        a.record_done("A@host/1", "h2", SINK, remote("A"), [SINK])


def test_release_dead_on_host_frees_only_claims_of_dead_processes(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    add_files(database_url, ["dead", "live", "other-worker", "other-host", "mine"])
    ledger = ledgers()
    ledger.enqueue()
    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    me = claim_token("w")
    try:
        owners = {
            "dead": f"w@{host}/{finished.pid}",
            "live": f"w@{host}/{running.pid}",
            "other-worker": f"w2@{host}/{finished.pid}",
            "other-host": f"w@not-{host}/{finished.pid}",
            "mine": me,  # this process's own earlier claims (a restarted run under the same pid)
        }
        with psycopg.connect(database_url, autocommit=True) as conn:
            for file_id, owner in owners.items():
                conn.execute("UPDATE filesync.files SET claimed_by = %s, claimed_until = now() + interval '1 hour' "
                             "WHERE file_id = %s", (owner, file_id))

        released = ledger.release_dead_on_host(host_prefix("w"), me)

        assert released == 2
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT file_id, claimed_by FROM filesync.files").fetchall()
        now_owned: dict[str, str | None] = dict(rows)
        assert now_owned == {**owners, "dead": None, "mine": None}
        assert sorted(t.file_id for t in ledger.claim("w3@host/3", limit=10, lease_seconds=60)) == ["dead", "mine"]
    finally:
        running.kill()
        running.wait(timeout=30)


def test_enqueue_racing_a_mark_does_not_queue_the_copied_file_again(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    """Worker B's mark (file done + app flag) commits while worker A's enqueue waits on that row: A must not
    take the now-copied file for one "whose flag was reset" and make it due again."""
    add_files(database_url, ["r1"])
    a, b = ledgers(), ledgers()
    a.enqueue()
    b.claim("B@host/2", limit=1, lease_seconds=60)
    marking = psycopg.connect(database_url)
    try:
        # B's record_done, held open just before its commit
        marking.execute("UPDATE filesync.files SET state = 'done', claimed_by = NULL, claimed_until = NULL, "
                        "done_at = now() WHERE file_id = 'r1'")
        marking.execute('UPDATE "File" SET "copiedToCloudflare" = true WHERE id = \'r1\'')
        enqueue = threading.Thread(target=a.enqueue)
        enqueue.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(database_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        marking.commit()
        enqueue.join(timeout=30)
    finally:
        marking.close()

    with psycopg.connect(database_url) as conn:
        assert conn.execute('SELECT "copiedToCloudflare" FROM "File"').fetchone() == (True,)
        assert conn.execute("SELECT state FROM filesync.files WHERE file_id = 'r1'").fetchone() == ("done",)
    assert a.backlog() == 0


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()
    return bool(row and row[0])


def test_a_flag_reset_by_the_app_long_after_the_mark_is_looked_at_again(
    database_url: str, ledgers: Callable[[], Ledger]
) -> None:
    add_files(database_url, ["r2"])
    ledger = ledgers()
    ledger.enqueue()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE filesync.files SET state = 'done', done_at = now() - interval '1 hour' "
                     "WHERE file_id = 'r2'")
        # the app resets its flag (it wants the file copied again): flag is false, the mark is old
    ledger.enqueue()
    assert ledger.backlog() == 1
