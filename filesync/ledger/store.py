"""The ledger: filesync's durable record of every file and destination. The only module that writes SQL.

Every step a later run needs (the claim, the tus URL, the outcome) is committed before the step that
could be interrupted; outcomes are accepted only from the worker that holds the file's lease.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from filesync.errors import ErrorClass, LeaseLost, LedgerError, RowChanged
from filesync.ledger import app_table, migrations
from filesync.ledger.base import (
    CopiedTransfer,
    Destination,
    Ledger,
    Problem,
    SinksFor,
    claim_token,
    dead_owners,
    host_prefix,
)
from filesync.ledger.db import Database
from filesync.ledger.sql import Queries
from filesync.model import SKIP, Entry, FileTask, RemoteObject, RunSummary, ScanCounts, Selection
from filesync.settings import AppTable

log = structlog.get_logger("filesync")
#: An enqueue adding this many files refreshes the ledger's statistics: the claim's plan stays right for a
#: backlog that grew from nothing (autovacuum's analyze comes later and less often).
ANALYZE_AFTER = 10_000


class PostgresLedger:
    """The ledger in PostgreSQL: named queries from queries.sql. A file's state changes are one statement each,
    with the lease check inside it (one round trip, committed as it ends); what needs several statements
    (enqueue, retry, the backfill) takes one transaction."""

    def __init__(self, db: Database, schema: str, app: AppTable) -> None:
        self.db = db
        self.schema = schema
        self.app = app
        self.q = Queries(schema, app)
        self._unique_ids: bool | None = None  # the app table has a unique index on its id column
        self._has_versions: bool | None = None  # the app table is a table (its rows have an xmin), not a view
        #: what inspection found, by file id, until the file's outcome records it (record_info)
        self._info: dict[str, tuple[str, str, int]] = {}

    # --- schema -----------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        return migrations.migrate(self.db, self.schema)

    def ping(self) -> None:
        with self.db.transaction() as conn:
            conn.execute("SELECT 1")

    # --- intake -----------------------------------------------------------------------------------
    def enqueue(self, window: float | None = None) -> int | None:
        """New rows of the app's table into the ledger; returns how many were added or changed, or None
        when another worker is enqueuing right now, or did within the last `window` seconds. The first
        query of the app's table: a missing table or column is a ConfigError naming its setting."""
        with app_table.explained(self.db, self.app, self.schema), self.db.transaction() as conn:
            row = conn.execute(self.q["enqueue_lock"], {"key": f"filesync:{self.schema}:enqueue"}).fetchone()
            if not (row and row[0]):
                return None
            if conn.execute(self.q["enqueue_mark"], {"window": window}).fetchone() is None and window is not None:
                return None
            moved = conn.execute(self.q["requeue_moved"]).rowcount
            added = conn.execute(self.q["enqueue_versioned" if self._versioned(conn) else "enqueue"]).rowcount
            reset = conn.execute(self.q["requeue_reset"]).rowcount
            if not self._id_unique(conn):
                conn.execute(self.q["duplicate_ids"])
        if added >= ANALYZE_AFTER:
            with self.db.transaction() as conn:
                conn.execute(self.q["analyze_files"])
        if moved or reset:
            log.info("enqueue_changed", transfers_to_replace=moved, flags_reset=reset)
        return max(added, 0) + max(reset, 0)

    def _versioned(self, conn: Any) -> bool:
        """Whether the app's rows carry a version (a table, not a view; asked once per process)."""
        if self._has_versions is None:
            table = sql.Identifier(*self.app.table).as_string(conn)
            row = conn.execute(self.q["app_has_versions"], {"table": table}).fetchone()
            self._has_versions = bool(row and row[0])
        return self._has_versions

    def _id_unique(self, conn: Any) -> bool:
        """Whether the app's ids are unique by an index (asked once per process): no duplicate-id pass then."""
        if self._unique_ids is None:
            table = sql.Identifier(*self.app.table).as_string(conn)
            row = conn.execute(self.q["id_is_unique"], {"table": table, "column": self.app.id}).fetchone()
            self._unique_ids = bool(row and row[0])
        return self._unique_ids

    def requeue_for_routes(self, routes: str, sinks_for: SinksFor) -> int:
        """When the routes changed since the last run: done or skipped files whose type's route now
        names a sink they lack become due again (a backfill). `sinks_for(mime) -> list[str]`."""
        changed = 0
        with self.db.transaction() as conn:
            if conn.execute(self.q["routes_changed"], {"routes": routes}).fetchone() is None:
                return 0
            rows = conn.execute(self.q["done_mimes"]).fetchall()
            for mime, done in rows:
                wanted = sinks_for(mime)
                if wanted and not set(wanted) <= set(done or ()):
                    changed += conn.execute(self.q["requeue_mime"], {"mime": mime, "sinks": wanted}).rowcount
        return changed

    # --- claims -----------------------------------------------------------------------------------
    def claim(self, worker: str, limit: int, lease_seconds: int, busy: Sequence[str] = (),
              run_id: int | None = None, selection: Selection | None = None) -> list[FileTask]:
        """Up to `limit` due files, leased to `worker`; never one of `busy` (still in flight here) nor one
        that run `run_id` deferred; only those `selection` names. One statement, one round trip."""
        sel = selection or Selection()
        with self.db.statement() as conn:
            rows = conn.execute(
                self.q["claim"],
                {"worker": worker, "limit": limit, "lease": lease_seconds, "busy": list(busy), "run": run_id,
                 "ids": sorted(sel.file_ids) if sel.file_ids is not None else None, "path_re": sel.path_regex(),
                 "since": sel.since, "until": sel.until},
            ).fetchall()
        return [_task(*row) for row in rows]

    def heartbeat(self, worker: str, file_ids: Sequence[str], lease_seconds: int) -> int:
        if not file_ids:
            return 0
        with self.db.statement() as conn:
            return conn.execute(
                self.q["heartbeat"], {"worker": worker, "ids": list(file_ids), "lease": lease_seconds}
            ).rowcount

    def release(self, worker: str, file_ids: Iterable[str] | None = None) -> int:
        """Hand claimed files back unmarked, so the next claim (any worker) picks them up."""
        ids = list(file_ids) if file_ids is not None else None
        for file_id in ids if ids is not None else list(self._info):
            self._info.pop(file_id, None)
        with self.db.statement() as conn:
            return conn.execute(self.q["release"], {"worker": worker, "ids": ids}).rowcount

    def defer(self, worker: str, file_id: str, run_id: int) -> None:
        self._info.pop(file_id, None)
        with self.db.statement() as conn:
            conn.execute(self.q["defer"], {"worker": worker, "file_id": file_id, "run": run_id})

    def release_dead_on_host(self, worker_prefix: str, live_token: str) -> int:
        """Release claims left by processes of this host that no longer run (killed, crashed, restarted).

        Claim tokens are `<worker>@<host>/<pid>`; a pid that is this process's own, or not alive, on this
        host cannot be holding a transfer now.
        """
        with self.db.transaction() as conn:
            owners = [r[0] for r in conn.execute(self.q["claims_on_host"], {"prefix": worker_prefix})]
        return sum(self.release(owner) for owner in dead_owners(owners, live_token))

    # --- outcomes (lease-checked) -----------------------------------------------------------------
    def claim_name(self, worker: str, file_id: str, sink: str, name: str) -> str:
        """Take destination `name` at `sink` for this file unless another file holds it; the owner's id."""
        params = {"worker": worker, "file_id": file_id, "sink": sink, "name": name}
        for _ in range(3):  # the owner is unseen only when it committed after the statement began
            with self.db.statement() as conn:
                row = conn.execute(self.q["claim_name"], params).fetchone()
            assert row is not None
            held, owner = row
            if not held:
                raise _lease_lost(file_id)
            if owner is not None:
                return str(owner)
        raise LedgerError(f"the name {name!r} at {sink} has no owner and cannot be taken")

    def record_info(self, file_id: str, kind: str, mime: str, size: int) -> None:
        """Kept until the file's outcome, which records it in the same statement (no round trip of its own)."""
        self._info[file_id] = (str(kind), mime, size)

    def _staged_info(self, file_id: str) -> dict[str, Any]:
        kind, mime, size = self._info.pop(file_id, (None, None, None))
        return {"kind": kind, "mime": mime, "size": size}

    def save_resume_token(self, worker: str, file_id: str, sink: str, token: str | None) -> None:
        self._leased_write(worker, file_id, "save_token", {"sink": sink, "token": token})

    def _leased_write(self, worker: str, file_id: str, query: str, params: dict[str, Any]) -> tuple[Any, ...]:
        """One statement that writes only while `worker` holds the file's lease: its row, or LeaseLost."""
        with self.db.statement() as conn:
            row = conn.execute(self.q[query], {"worker": worker, "file_id": file_id, **params}).fetchone()
        if row is None:
            raise _lease_lost(file_id)
        return tuple(row)

    def record_done(
        self, worker: str, file_id: str, sink: str, remote: RemoteObject, routed: Sequence[str],
        path: str | None = None, derivation: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record one confirmed transfer, in one statement: when every routed sink is done, the file and the
        app's flag are marked with it. Returns True when the file is now complete. With `path` (the path the
        bytes came from), a row that moved meanwhile is not recorded: RowChanged, the transfer marked for
        replace."""
        return self._done(worker, file_id, routed, path=path, transfer={
            "sink": sink, "remote_id": remote.remote_id, "url": remote.url, "bytes": remote.size,
            "checksum": remote.checksum, "derivation": Jsonb(dict(derivation)) if derivation else None})

    def mark_complete(self, worker: str, file_id: str, routed: Sequence[str]) -> bool:
        """For a file whose routed transfers were all done earlier (its flag was reset, or a crash came
        between the last transfer and the mark): set the flag now. True when complete. The same statement
        as record_done, with no transfer to write."""
        return self._done(worker, file_id, routed, path=None, transfer=dict.fromkeys(
            ("sink", "remote_id", "url", "bytes", "checksum", "derivation")))

    def _done(self, worker: str, file_id: str, routed: Sequence[str], *, path: str | None,
              transfer: dict[str, Any]) -> bool:
        params = {"worker": worker, "file_id": file_id, "app_file_id": file_id, "path": path,
                  "routed": list(routed), **transfer, **self._staged_info(file_id)}
        with self.db.statement() as conn:
            row = conn.execute(self.q["transfer_done"], params).fetchone()
        assert row is not None
        held, now_path, recorded, complete = row
        if not held:
            raise _lease_lost(file_id)
        if not recorded:
            raise RowChanged(f"file {file_id} moved from {path!r} to {now_path!r} while it was copied")
        return bool(complete)

    def record_transfer_failure(
        self, worker: str, file_id: str, sink: str, error_class: str, status: int | None, error: str,
        permanent: bool,
    ) -> None:
        self._leased_write(worker, file_id, "transfer_failed", {
            "sink": sink, "state": "failed" if permanent else "pending", "error_class": error_class,
            "status": status, "error": error[:1000]})

    def make_due(self, file_ids: Sequence[str]) -> int:
        with self.db.transaction() as conn:
            return conn.execute(self.q["make_due"], {"ids": list(file_ids)}).rowcount

    def record_failure(
        self, worker: str, file_id: str, *, error_class: str, status: int | None, error: str, park: bool,
        retry_in: float, count: bool = True,
    ) -> tuple[str, int]:
        """Count an attempt and release the claim: parked ('failed') when `park`, else due again in
        `retry_in` seconds (both decided by the RetryPolicy). Returns (new state, attempts)."""
        state, attempts = self._leased_write(worker, file_id, "file_failed", {
            "park": park, "retry_in": retry_in, "count": count, "error_class": error_class, "status": status,
            "error": error[:1000], **self._staged_info(file_id)})
        return str(state), int(attempts)

    def record_skipped(self, worker: str, file_id: str, reason: str) -> None:
        self._leased_write(worker, file_id, "file_skipped", {"reason": reason, **self._staged_info(file_id)})

    # --- runs and reports -------------------------------------------------------------------------
    def start_run(self, worker: str) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(
                self.q["run_start"], {"worker": worker, "host": socket.gethostname(), "pid": os.getpid()}
            ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_run(self, run_id: int, summary: RunSummary, status: str, error: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                self.q["run_finish"],
                {"run_id": run_id, "status": status, "copied": summary.copied, "skipped": summary.skipped,
                 "failed": summary.failed, "retry_later": summary.retry_later, "bytes": summary.bytes,
                 "error": error},
            )

    def scan(self, entries: Iterable[Entry], prefix: str = "", page: int = 1000) -> ScanCounts | None:
        """Record a listing in the catalog, page by page in one transaction: new objects added, changed ones
        updated (their flag cleared), unchanged ones not written, those the listing lacks marked gone. None
        when another worker is scanning right now."""
        counts = ScanCounts()
        with self.db.transaction() as conn:
            row = conn.execute(self.q["catalog_scan_lock"], {"key": f"filesync:{self.schema}:scan"}).fetchone()
            if not (row and row[0]):
                return None
            conn.execute(self.q["catalog_seen_table"])
            batch: list[Entry] = []
            for entry in entries:
                batch.append(entry)
                if len(batch) >= page:
                    self._scan_page(conn, batch, counts)
                    batch = []
            self._scan_page(conn, batch, counts)
            counts.gone = conn.execute(self.q["catalog_gone"], {"prefix": prefix}).rowcount
        return counts

    def _scan_page(self, conn: Any, batch: list[Entry], counts: ScanCounts) -> None:
        if not batch:
            return
        counts.listed += len(batch)
        counts.skipped += sum(1 for e in batch if SKIP in e.metadata)
        keys = [e.key for e in batch]
        conn.execute(self.q["catalog_seen"], {"keys": keys})
        written = conn.execute(self.q["catalog_upsert"], {
            "keys": keys, "sizes": [e.size for e in batch], "etags": [e.etag for e in batch],
            "types": [e.content_type for e in batch], "modified": [e.modified for e in batch],
            "metadata": [Jsonb(dict(e.metadata)) for e in batch],
        }).fetchall()
        added = sum(1 for (new,) in written if new)
        counts.added += added
        counts.changed += len(written) - added

    def catalog_counts(self) -> tuple[int, int, int, int]:
        """(objects, gone, skipped, copied) in the catalog."""
        with self.db.transaction() as conn:
            row = conn.execute(self.q["catalog_counts"]).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def rows_without_id(self) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(self.q["rows_without_id"]).fetchone()
        return int(row[0]) if row else 0

    def backlog(self) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(self.q["backlog"]).fetchone()
        return int(row[0]) if row else 0

    def retry(self, file_ids: Sequence[str] | None = None) -> int:
        """Operator's retry: parked files (all, or these) are due again with a fresh attempt count."""
        ids = list(file_ids) if file_ids else None
        with self.db.transaction() as conn:
            conn.execute(self.q["retry_transfers"], {"ids": ids})
            return conn.execute(self.q["retry_failed"], {"ids": ids}).rowcount

    def state_counts(self) -> dict[str, int]:
        with self.db.transaction() as conn:
            return {state: int(n) for state, n in conn.execute(self.q["state_counts"])}

    def problems(self, limit: int = 20) -> list[Problem]:
        with self.db.transaction() as conn:
            return [Problem(*row) for row in conn.execute(self.q["problems"], {"limit": limit})]

    def destinations(self) -> list[Destination]:
        """(file id, path, state, sink, remote id, url) of every file; sink is None when not copied."""
        with self.db.transaction() as conn:
            return [tuple(row) for row in conn.execute(self.q["destinations"])]

    def not_copied_index_hint(self) -> str | None:
        """None when the planner reads the app's rows not yet copied through a partial index (as enqueue
        does, `copied IS NOT TRUE`); else the index to create. An index `WHERE NOT copied` cannot serve that
        predicate, so it gets the hint too. The catalog has its own (migration 0009)."""
        if self.app.table == (self.schema, "catalog_files"):
            return None
        with self.db.transaction() as conn:
            table = sql.Identifier(*self.app.table).as_string(conn)
            partial = {r[0] for r in conn.execute(self.q["partial_indexes"], {"table": table})}
            conn.execute(self.q["discourage_seqscan"])
            plan = conn.execute(self.q["not_copied_plan"]).fetchone()
            if partial & _index_names(plan[0] if plan else None):
                return None
            return (
                sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({}) WHERE {} IS NOT TRUE")
                .format(sql.Identifier(*self.app.table), sql.Identifier(self.app.id), sql.Identifier(self.app.copied))
                .as_string(conn)
            )

    def copied_transfers(
        self, *, sample: int | None = None, since: datetime | None = None, sink: str | None = None
    ) -> list[CopiedTransfer]:
        with self.db.transaction() as conn:
            rows = conn.execute(self.q["copied_transfers"], {"sample": sample, "since": since, "sink": sink})
            return [CopiedTransfer(*row) for row in rows]

    def requeue_transfer(self, file_id: str, sink: str, reason: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(self.q["requeue_transfer"], {"file_id": file_id, "sink": sink, "reason": reason[:1000]})

    def close(self) -> None:
        self.db.close()

    def abandon_dead_runs(self, worker_prefix: str, live_token: str, run_id: int) -> int:
        with self.db.transaction() as conn:
            rows = conn.execute(self.q["running_runs"], {"current": run_id}).fetchall()
        mine = [worker for _, worker, _ in rows if worker.startswith(worker_prefix)]
        dead = set(dead_owners(mine, live_token))
        # This host's pids are checked; another host's runs can only be judged by age and leases.
        ids = [rid for rid, worker, stale in rows
               if worker in dead or (stale and not worker.startswith(worker_prefix))]
        if not ids:
            return 0
        with self.db.transaction() as conn:
            return conn.execute(self.q["abandon_runs"], {
                "ids": ids, "error": f"abandoned: its process ended without finishing it (seen by run {run_id})",
            }).rowcount


def _lease_lost(file_id: str) -> LeaseLost:
    return LeaseLost(f"lease on file {file_id} is no longer held by this worker")


def _index_names(plan: Any) -> set[str]:
    """Every "Index Name" in an EXPLAIN (FORMAT JSON) plan."""
    if isinstance(plan, dict):
        found = {plan["Index Name"]} if "Index Name" in plan else set()
        return found.union(*(_index_names(v) for v in plan.values()))
    if isinstance(plan, list):
        return set().union(*(_index_names(v) for v in plan))
    return set()


def _task(file_id: str, path: str | None, date_taken: str | None, gps: str | None, attempts: int,
          transfers: list[list[Any]]) -> FileTask:
    """A claimed row and what its destinations already have (the claim's JSON array per transfer)."""
    done: set[str] = set()
    parked: dict[str, tuple[str, str]] = {}
    tokens: dict[str, str] = {}
    replace: set[str] = set()
    for sink, state, token, error_class, error, stale in transfers:
        if stale and state == "pending":
            replace.add(sink)
        if state == "done":
            done.add(sink)
        elif state == "failed":
            parked[sink] = (error_class, error)
        if token:
            tokens[sink] = token
    return FileTask(file_id=file_id, path=path, date_taken=date_taken, gps=gps, attempts=attempts,
                    done_sinks=frozenset(done), parked_sinks=parked, replace_sinks=frozenset(replace),
                    resume_tokens=tokens)


_conforms: type[Ledger] = PostgresLedger

__all__ = ["CopiedTransfer", "ErrorClass", "PostgresLedger", "Problem", "claim_token", "host_prefix"]
