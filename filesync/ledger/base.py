"""The ledger's contract: what the engine asks of filesync's durable record, whatever stores it.

Two implementations: `PostgresLedger` (the product, `filesync/ledger/store.py`) and `MemoryLedger`
(`filesync/testing/memory_ledger.py`, for fast pipeline tests). APScheduler 4's data stores are the model:
one protocol, every lease test run on both.

States: a file is `pending` (due at `next_attempt_at`), `done` (every routed destination holds it and the
app's flag is set), `skipped` (no route for its type) or `failed` (parked until an operator retries it).
Each (file, destination) transfer is `pending`, `done` or `failed` on its own. A claim is a lease
(`claimed_by`, `claimed_until`); every method taking `worker` refuses with LeaseLost unless that worker
holds a live lease on the file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from filesync.model import Entry, FileTask, RemoteObject, RunSummary, ScanCounts, Selection

SinksFor = Callable[[str], list[str]]
#: (file id, path, state, sink, remote id, url); sink is None for a file with no copy yet.
Destination = tuple[str, str | None, str, str | None, str | None, str | None]


@dataclass(frozen=True)
class Problem:
    file_id: str
    state: str
    error_class: str
    status: int | None
    error: str
    attempts: int
    updated_at: datetime


@dataclass(frozen=True)
class CopiedTransfer:
    file_id: str
    sink: str
    remote_id: str | None
    bytes: int | None
    checksum: str | None
    path: str | None
    mime: str | None
    kind: str | None
    size: int | None
    date_taken: str | None
    gps: str | None


class Ledger(Protocol):
    # --- schema and intake ------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Create or upgrade the ledger's tables; the versions applied."""

    def ping(self) -> None:
        """One round trip; LedgerUnavailable when the store cannot be reached."""

    def enqueue(self, window: float | None = None) -> int | None:
        """App rows not yet copied become pending files; a changed row is updated (a new path makes it due,
        and its done transfers are sent again replacing the old bytes); a done file whose flag the app reset
        is due again, every destination replaced. How many, or None when another worker is enqueuing right
        now or did within the last `window` seconds."""

    def requeue_for_routes(self, routes: str, sinks_for: SinksFor) -> int:
        """When the routes changed: done or skipped files whose type now routes to a destination they lack
        become pending again (a backfill). How many."""

    # --- claims -----------------------------------------------------------------------------------
    def claim(self, worker: str, limit: int, lease_seconds: int, busy: Sequence[str] = (),
              run_id: int | None = None, selection: Selection | None = None) -> list[FileTask]:
        """Up to `limit` due pending files, leased to `worker`, oldest due first; never one of `busy`, nor one
        run `run_id` deferred; only those `selection` names (ids, path globs, a dateTaken range)."""

    def make_due(self, file_ids: Sequence[str]) -> int:
        """These pending, unclaimed files are due now (the end-of-run retry pass); attempts are kept."""

    def heartbeat(self, worker: str, file_ids: Sequence[str], lease_seconds: int) -> int:
        """Extend `worker`'s leases on these files; how many it still held."""

    def release(self, worker: str, file_ids: Iterable[str] | None = None) -> int:
        """Drop `worker`'s leases (all, or these) without counting an attempt: due again at once."""

    def defer(self, worker: str, file_id: str, run_id: int) -> None:
        """Hand the file back uncounted, not to be claimed again by run `run_id` (a destination is stopped)."""

    def release_dead_on_host(self, worker_prefix: str, live_token: str) -> int:
        """Release leases held by processes of this host that no longer run (or by this very process)."""

    # --- outcomes (lease-checked) -----------------------------------------------------------------
    def claim_name(self, worker: str, file_id: str, sink: str, name: str) -> str:
        """Take destination `name` at `sink` for this file, first come first served (a template may map two
        files to one name); the id of the file that owns it, which is not this one on a collision."""

    def record_info(self, file_id: str, kind: str, mime: str, size: int) -> None:
        """What inspection found (kind, type, bytes): shown by status and used by the backfill. A store may
        keep it until the file's outcome and record it in the same statement."""

    def save_resume_token(self, worker: str, file_id: str, sink: str, token: str | None) -> None:
        """Durably store (or clear) a transfer's resume token (a tus URL) before bytes move."""

    def record_done(self, worker: str, file_id: str, sink: str, remote: RemoteObject,
                    routed: Sequence[str], path: str | None = None,
                    derivation: Mapping[str, Any] | None = None) -> bool:
        """The transfer is done; when every routed destination is, the file is done and the app's flag set,
        in the same transaction. True when the file is complete. With `path` (where the bytes were read),
        a row that moved meanwhile records nothing: RowChanged, and the transfer is marked to replace.
        `derivation` says what a fitted or converted copy was made from (FILESYNC_TRANSFORMS)."""

    def mark_complete(self, worker: str, file_id: str, routed: Sequence[str]) -> bool:
        """Set the file done and the flag if every routed transfer is already done. True when complete."""

    def record_transfer_failure(self, worker: str, file_id: str, sink: str, error_class: str, status: int | None,
                                error: str, permanent: bool) -> None:
        """One destination failed: the transfer is parked ('failed') when permanent, else stays pending."""

    def record_failure(self, worker: str, file_id: str, *, error_class: str, status: int | None, error: str,
                       park: bool, retry_in: float, count: bool = True) -> tuple[str, int]:
        """Count an attempt (unless `count` is False: this run counted one already) and release the lease:
        parked, or due again in `retry_in` seconds. (new state, attempts)."""

    def record_skipped(self, worker: str, file_id: str, reason: str) -> None:
        """No route for the file's type: skipped with the reason (looked at again when routes change)."""

    # --- runs and reports -------------------------------------------------------------------------
    def start_run(self, worker: str) -> int:
        """A new run record, `running`; its id."""

    def finish_run(self, run_id: int, summary: RunSummary, status: str, error: str | None = None) -> None:
        """Close the run record with its counts."""

    def scan(self, entries: Iterable[Entry], prefix: str = "", page: int = 1000) -> ScanCounts | None:
        """Record a source listing in the catalog: new objects added, changed ones updated with their flag
        cleared (copied again), unchanged ones not written, the ones under `prefix` it lacks marked gone.
        None when another worker is scanning."""

    def catalog_counts(self) -> tuple[int, int, int, int]:
        """(objects, gone, skipped, copied) in the catalog."""

    def rows_without_id(self) -> int:
        """App rows not copied whose id is NULL: they cannot be tracked, so they are reported, not copied."""

    def backlog(self) -> int:
        """Pending files due now."""

    def retry(self, file_ids: Sequence[str] | None = None) -> int:
        """Parked files (all, or these) and their parked transfers become due now, attempts reset."""

    def state_counts(self) -> dict[str, int]:
        """Files per state."""

    def problems(self, limit: int = 20) -> list[Problem]:
        """The latest failed, skipped or retried files, newest first."""

    def destinations(self) -> list[Destination]:
        """Where each file went."""

    def not_copied_index_hint(self) -> str | None:
        """The CREATE INDEX a large app table lacks, or None."""

    def copied_transfers(self, *, sample: int | None = None, since: datetime | None = None,
                         sink: str | None = None) -> list[CopiedTransfer]:
        """Done transfers (a random sample, since a time, of one destination) for `verify`."""

    def requeue_transfer(self, file_id: str, sink: str, reason: str) -> None:
        """`verify --repair`: the copy is gone; that transfer and its file are due again."""

    def close(self) -> None:
        """Release connections."""

    def abandon_dead_runs(self, worker_prefix: str, live_token: str, run_id: int) -> int:
        """Runs left `running` by a process that is gone become `abandoned` (finished_at stays empty): this
        host's runs whose pid no longer runs (or is this process's own, restarted), and any host's runs over
        an hour old whose worker holds no live lease. Never `run_id`, the caller's. How many.

        A run wrongly taken for dead keeps its true end: `finish_run` overwrites the status."""


def claim_token(worker_id: str) -> str:
    """This process's name in leases: worker, host and pid, so a dead process's claims can be recognised."""
    return f"{worker_id}@{socket.gethostname()}/{os.getpid()}"


def host_prefix(worker_id: str) -> str:
    return f"{worker_id}@{socket.gethostname()}/"


def dead_owners(owners: Iterable[str], live_token: str) -> list[str]:
    """Claim tokens `<worker>@<host>/<pid>` of this host whose process is gone (or is this one, restarted)."""
    dead = []
    for owner in owners:
        pid_text = owner.rsplit("/", 1)[-1]
        if pid_text.isdigit() and (owner == live_token or not _alive(int(pid_text))):
            dead.append(owner)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
