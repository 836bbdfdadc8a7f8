"""Leases on the ledger (issue 5): an expired lease moves to another worker and the stalled worker's late
mark is refused; parallel claimers never share a file; batches respect their limit; a heartbeat keeps a
lease alive; claims of a dead process on this host are released, those of a live one are not.

Every case runs on both ledgers (APScheduler's data-store tests are the model): PostgreSQL, with one
Database (pool) per simulated worker as separate processes have, and the in-memory ledger the pipeline's
unit tests use, with one MemoryLedger per worker over one store.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
import pytest

from filesync.errors import LeaseLost
from filesync.ledger import Database, Ledger, PostgresLedger, claim_token, host_prefix
from filesync.model import RemoteObject
from filesync.settings import AppTable
from filesync.testing.memory_ledger import AppRow, MemoryLedger, MemoryStore

APP = AppTable(table=("File",), id="id", path="path", date_taken="dateTaken", gps="gpsCoordinates",
               copied="copiedToCloudflare")
SINK = "cloudflare-images"


class Backend(Protocol):
    """One store seen by several ledgers, and what the tests read or arrange behind their back."""

    name: str

    def make(self) -> Ledger: ...
    def add_files(self, ids: list[str]) -> None: ...
    def now(self) -> datetime: ...
    def claimed_until(self, file_id: str) -> datetime: ...
    def owners(self) -> dict[str, str | None]: ...
    def set_claim(self, file_id: str, owner: str) -> None: ...
    def app_flag(self, file_id: str) -> bool: ...
    def file_row(self, file_id: str) -> tuple[Any, ...]: ...
    def transfers(self, file_id: str) -> list[tuple[Any, ...]]: ...
    def mark_done_long_ago(self, file_id: str) -> None: ...


class PostgresBackend:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[Ledger] = []

    def make(self) -> Ledger:
        ledger = PostgresLedger(Database(self.url, max_size=2), "filesync", APP)
        self.made.append(ledger)
        return ledger

    def _rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return [tuple(r) for r in conn.execute(query, args).fetchall()]

    def add_files(self, ids: list[str]) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany('INSERT INTO "File" (id, path) VALUES (%s, %s)', [(i, f"{i}.jpg") for i in ids])

    def now(self) -> datetime:
        return self._rows("SELECT now()")[0][0]  # type: ignore[no-any-return]

    def claimed_until(self, file_id: str) -> datetime:
        value = self._rows("SELECT claimed_until FROM filesync.files WHERE file_id = %s", file_id)[0][0]
        assert value is not None
        return value  # type: ignore[no-any-return]

    def owners(self) -> dict[str, str | None]:
        return dict(self._rows("SELECT file_id, claimed_by FROM filesync.files"))  # type: ignore[arg-type]

    def set_claim(self, file_id: str, owner: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE filesync.files SET claimed_by = %s, claimed_until = now() + interval '1 hour' "
                         "WHERE file_id = %s", (owner, file_id))

    def app_flag(self, file_id: str) -> bool:
        return bool(self._rows('SELECT "copiedToCloudflare" FROM "File" WHERE id = %s', file_id)[0][0])

    def file_row(self, file_id: str) -> tuple[Any, ...]:
        return self._rows("SELECT state, attempts, error, claimed_by FROM filesync.files WHERE file_id = %s",
                          file_id)[0]

    def transfers(self, file_id: str) -> list[tuple[Any, ...]]:
        return self._rows("SELECT sink, state, remote_id, attempts, resume_token FROM filesync.transfers "
                          "WHERE file_id = %s", file_id)

    def mark_done_long_ago(self, file_id: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE filesync.files SET state = 'done', done_at = now() - interval '1 hour' "
                         "WHERE file_id = %s", (file_id,))


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.store = MemoryStore()

    def make(self) -> Ledger:
        return MemoryLedger(self.store)

    def add_files(self, ids: list[str]) -> None:
        with self.store.lock:
            self.store.app.update({i: AppRow(path=f"{i}.jpg") for i in ids})

    def now(self) -> datetime:
        return self.store.clock()

    def claimed_until(self, file_id: str) -> datetime:
        value = self.store.files[file_id].claimed_until
        assert value is not None
        return value

    def owners(self) -> dict[str, str | None]:
        return {f.file_id: f.claimed_by for f in self.store.files.values()}

    def set_claim(self, file_id: str, owner: str) -> None:
        f = self.store.files[file_id]
        f.claimed_by, f.claimed_until = owner, self.now() + timedelta(hours=1)

    def app_flag(self, file_id: str) -> bool:
        return self.store.app[file_id].copied

    def file_row(self, file_id: str) -> tuple[Any, ...]:
        f = self.store.files[file_id]
        return f.state, f.attempts, f.error, f.claimed_by

    def transfers(self, file_id: str) -> list[tuple[Any, ...]]:
        return [(sink, t.state, t.remote_id, t.attempts, t.resume_token)
                for (fid, sink), t in self.store.transfers.items() if fid == file_id]

    def mark_done_long_ago(self, file_id: str) -> None:
        f = self.store.files[file_id]
        f.state, f.done_at = "done", datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture(params=["postgres", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    url = request.getfixturevalue("database_url")
    pg = PostgresBackend(url)
    pg.make().migrate()
    yield pg
    for ledger in pg.made:
        ledger.close()


@pytest.fixture
def ledgers(backend: Backend) -> Callable[[], Ledger]:
    """A factory of ledgers over one store (migrated once)."""
    return backend.make


def wait_past(backend: Backend, moment: datetime, timeout: float = 30) -> None:
    """Until the store's clock is past `moment` (lease expiry is judged by the store's now())."""
    deadline = time.monotonic() + timeout
    while backend.now() <= moment:
        assert time.monotonic() < deadline, f"the store's clock did not pass {moment}"
        time.sleep(0.1)


def remote(worker: str) -> RemoteObject:
    return RemoteObject(remote_id=f"img-from-{worker}", url=f"https://cdn.example/{worker}", size=10)


def test_expired_lease_moves_to_another_worker_and_the_late_mark_is_refused(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    backend.add_files(["f1"])
    a, b = ledgers(), ledgers()
    a.enqueue()
    worker_a, worker_b = "A@host/1", "B@host/2"

    [task] = a.claim(worker_a, limit=5, lease_seconds=1)
    assert task.file_id == "f1"
    assert b.claim(worker_b, limit=5, lease_seconds=60) == []  # held: nobody else gets it
    wait_past(backend, backend.claimed_until("f1"))  # A stalls past its lease

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

    assert backend.app_flag("f1") is True
    assert backend.transfers("f1") == [(SINK, "done", "img-from-B", 1, None)]
    assert backend.file_row("f1") == ("done", 0, None, None)


def test_expired_lease_refuses_the_mark_even_when_nobody_took_it(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    backend.add_files(["f1"])
    a = ledgers()
    a.enqueue()
    a.claim("A@host/1", limit=1, lease_seconds=1)
    wait_past(backend, backend.claimed_until("f1"))

    with pytest.raises(LeaseLost):
        a.record_done("A@host/1", "f1", SINK, remote("A"), [SINK])

    assert backend.app_flag("f1") is False
    assert backend.transfers("f1") == []


def test_the_flag_is_set_only_when_every_routed_destination_holds_the_file(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    """record_done with another destination still to go, then mark_complete (the pass for a file whose
    transfers were all done earlier): the flag waits for the last one, and only the lease holder sets it."""
    backend.add_files(["f1"])
    a = ledgers()
    a.enqueue()
    a.claim("A@host/1", limit=1, lease_seconds=60)
    other = "bunny"

    assert a.record_done("A@host/1", "f1", SINK, remote("A"), [SINK, other]) is False
    assert a.mark_complete("A@host/1", "f1", [SINK, other]) is False
    assert backend.app_flag("f1") is False
    with pytest.raises(LeaseLost):
        a.mark_complete("B@host/2", "f1", [SINK])
    assert backend.app_flag("f1") is False

    assert a.mark_complete("A@host/1", "f1", [SINK]) is True  # the routes now name only the done one
    assert backend.app_flag("f1") is True
    assert backend.file_row("f1") == ("done", 0, None, None)
    assert backend.transfers("f1") == [(SINK, "done", "img-from-A", 1, None)]  # no transfer written


def test_parallel_claimers_never_get_the_same_file(backend: Backend, ledgers: Callable[[], Ledger]) -> None:
    ids = [f"p{n:04d}" for n in range(500)]
    backend.add_files(ids)
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
    owners = backend.owners()
    for n, batch in got.items():
        assert all(owners[file_id] == f"w{n}@host/{n}" for file_id in batch)


def test_claim_batches_respect_the_limit(backend: Backend, ledgers: Callable[[], Ledger]) -> None:
    backend.add_files([f"b{n:02d}" for n in range(20)])
    ledger = ledgers()
    ledger.enqueue()

    sizes = [len(ledger.claim("w@host/1", limit=limit, lease_seconds=60)) for limit in (3, 5, 1, 8, 8)]

    assert sizes == [3, 5, 1, 8, 3]
    assert ledger.backlog() == 20  # claimed files stay due: only the lease keeps others off them
    assert ledger.claim("w2@host/2", limit=8, lease_seconds=60) == []


def test_a_heartbeat_keeps_a_lease_alive_past_its_first_expiry(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    backend.add_files(["h1", "h2"])
    a, b = ledgers(), ledgers()
    a.enqueue()
    a.claim("A@host/1", limit=2, lease_seconds=1)
    first_expiry = backend.claimed_until("h1")

    assert a.heartbeat("A@host/1", ["h1"], 60) == 1  # only h1 is still being worked on
    wait_past(backend, first_expiry)

    [taken] = b.claim("B@host/2", limit=5, lease_seconds=60)
    assert taken.file_id == "h2"  # the lapsed one moved; the beating one did not
    assert a.record_done("A@host/1", "h1", SINK, remote("A"), [SINK]) is True
    with pytest.raises(LeaseLost):
        a.record_done("A@host/1", "h2", SINK, remote("A"), [SINK])


def test_release_dead_on_host_frees_only_claims_of_dead_processes(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    backend.add_files(["dead", "live", "other-worker", "other-host", "mine"])
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
        for file_id, owner in owners.items():
            backend.set_claim(file_id, owner)

        released = ledger.release_dead_on_host(host_prefix("w"), me)

        assert released == 2
        assert backend.owners() == {**owners, "dead": None, "mine": None}
        assert sorted(t.file_id for t in ledger.claim("w3@host/3", limit=10, lease_seconds=60)) == ["dead", "mine"]
    finally:
        running.kill()
        running.wait(timeout=30)


def test_enqueue_racing_a_mark_does_not_queue_the_copied_file_again(
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    """Worker B's mark (file done + app flag) commits while worker A's enqueue waits on that row: A must not
    take the now-copied file for one "whose flag was reset" and make it due again."""
    if not isinstance(backend, PostgresBackend):
        pytest.skip("a race on PostgreSQL's row locks; the memory store runs every call under one lock")
    database_url = backend.url
    backend.add_files(["r1"])
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
    backend: Backend, ledgers: Callable[[], Ledger]
) -> None:
    backend.add_files(["r2"])
    ledger = ledgers()
    ledger.enqueue()
    backend.mark_done_long_ago("r2")
    # the app resets its flag (it wants the file copied again): flag is false, the mark is old
    ledger.enqueue()
    assert ledger.backlog() == 1
