"""Runs whose process died are marked `abandoned` instead of staying `running` forever (issue 9).

On both ledgers, as tests/integration/test_leases.py: this host's runs are judged by their pid (a real
process that has exited, one still alive, this process's own), another host's by age and live leases.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psycopg
import pytest

from filesync.ledger import Database, Ledger, PostgresLedger, claim_token, host_prefix
from filesync.model import RunSummary
from filesync.settings import AppTable
from filesync.testing.memory_ledger import AppRow, MemoryLedger, MemoryStore

APP = AppTable(table=("File",), id="id", path="path", date_taken="dateTaken", gps="gpsCoordinates",
               copied="copiedToCloudflare")


class Backend(Protocol):
    ledger: Ledger

    def add_run(self, worker: str, age: timedelta) -> int: ...
    def lease(self, file_id: str, owner: str) -> None: ...
    def runs(self) -> dict[int, tuple[str, str | None]]: ...


class Postgres:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ledger = PostgresLedger(Database(url, max_size=2), "filesync", APP)
        self.ledger.migrate()

    def add_run(self, worker: str, age: timedelta) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("INSERT INTO filesync.runs (worker, host, pid, started_at) "
                               "VALUES (%s, 'h', 1, now() - %s) RETURNING id", (worker, age)).fetchone()
        assert row is not None
        return int(row[0])

    def lease(self, file_id: str, owner: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (file_id, f"{file_id}.jpg"))
        self.ledger.enqueue()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE filesync.files SET claimed_by = %s, claimed_until = now() + interval '1 hour' "
                         "WHERE file_id = %s", (owner, file_id))

    def runs(self) -> dict[int, tuple[str, str | None]]:
        with psycopg.connect(self.url) as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, error FROM filesync.runs")}


class Memory:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.ledger = MemoryLedger(self.store)

    def add_run(self, worker: str, age: timedelta) -> int:
        self.store.runs.append({"worker": worker, "status": "running", "started_at": datetime.now(UTC) - age})
        return len(self.store.runs)

    def lease(self, file_id: str, owner: str) -> None:
        self.store.app[file_id] = AppRow(path=f"{file_id}.jpg")
        self.ledger.enqueue()
        f = self.store.files[file_id]
        f.claimed_by, f.claimed_until = owner, datetime.now(UTC) + timedelta(hours=1)

    def runs(self) -> dict[int, tuple[str, str | None]]:
        return {i: (r["status"], r.get("error")) for i, r in enumerate(self.store.runs, 1)}


@pytest.fixture(params=["postgres", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield Memory()
        return
    pg = Postgres(request.getfixturevalue("database_url"))
    yield pg
    pg.ledger.close()


def test_runs_of_gone_processes_become_abandoned_and_live_ones_stay_running(backend: Backend) -> None:
    host = socket.gethostname()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(timeout=30)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    me = claim_token("w")
    young, old = timedelta(0), timedelta(hours=2)
    try:
        ids = {
            "dead": backend.add_run(f"w@{host}/{exited.pid}", young),
            "alive": backend.add_run(f"w@{host}/{alive.pid}", old),
            "mine, before a restart": backend.add_run(me, young),
            "other host, young": backend.add_run(f"w@not-{host}/7", young),
            "other host, old": backend.add_run(f"w@not-{host}/8", old),
            "other host, old, leasing": backend.add_run(f"w@not-{host}/9", old),
        }
        backend.lease("f1", f"w@not-{host}/9")
        current = backend.ledger.start_run(me)
        finished = backend.add_run(f"w@{host}/{exited.pid}", young)
        backend.ledger.finish_run(finished, RunSummary(), "ok")

        abandoned = backend.ledger.abandon_dead_runs(host_prefix("w"), me, current)

        runs = backend.runs()
        status = {name: runs[i][0] for name, i in ids.items()}
        assert status == {"dead": "abandoned", "alive": "running", "mine, before a restart": "abandoned",
                          "other host, young": "running", "other host, old": "abandoned",
                          "other host, old, leasing": "running"}
        assert abandoned == 3
        assert runs[current][0] == "running", "the caller's own run is never abandoned"
        assert runs[finished][0] == "ok", "a finished run keeps its status"
        assert f"seen by run {current}" in str(runs[ids["dead"]][1])
        assert backend.ledger.abandon_dead_runs(host_prefix("w"), me, current) == 0

        # A run taken for dead that still finishes keeps its true end.
        backend.ledger.finish_run(ids["other host, old"], RunSummary(copied=1), "ok")
        assert backend.runs()[ids["other host, old"]][0] == "ok"
    finally:
        alive.kill()
        alive.wait(timeout=30)
