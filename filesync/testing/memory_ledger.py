"""The ledger in memory: the same contract as PostgreSQL's, for pipeline tests that run in milliseconds.

Several `MemoryLedger` objects over one `MemoryStore` behave like workers with their own pools on one
database: one lock stands for PostgreSQL's row locks, `clock` for its `now()`. The app's table is
`store.app`, a dict of rows. The lease tests in tests/integration/test_leases.py run against both.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from filesync.errors import LeaseLost, RowChanged
from filesync.ledger.base import CopiedTransfer, Destination, Ledger, Problem, SinksFor, dead_owners
from filesync.model import SKIP, Entry, FileTask, RemoteObject, RunSummary, ScanCounts, Selection


@dataclass
class AppRow:
    path: str | None
    date_taken: str | None = None
    gps: str | None = None
    copied: bool = False


@dataclass
class FileRow:
    file_id: str
    path: str | None
    date_taken: str | None
    gps: str | None
    state: str = "pending"
    kind: str | None = None
    mime: str | None = None
    size: int | None = None
    attempts: int = 0
    next_attempt_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    error_class: str | None = None
    error_status: int | None = None
    error: str | None = None
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    done_at: datetime | None = None
    deferred_run: int | None = None


@dataclass
class TransferRow:
    state: str = "pending"
    attempts: int = 0
    resume_token: str | None = None
    remote_id: str | None = None
    remote_url: str | None = None
    bytes: int | None = None
    checksum: str | None = None
    error_class: str | None = None
    error_status: int | None = None
    error: str | None = None
    done_at: datetime | None = None
    replace: bool = False
    derivation: dict[str, Any] | None = None


@dataclass
class MemoryStore:
    """One "database": the app's rows, filesync's files, transfers, runs and meta."""

    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    app: dict[str, AppRow] = field(default_factory=dict)
    files: dict[str, FileRow] = field(default_factory=dict)
    transfers: dict[tuple[str, str], TransferRow] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    names: dict[tuple[str, str], str] = field(default_factory=dict)  # (sink, name) -> owning file id
    catalog: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # key -> (etag, size, modified, metadata)
    lock: threading.RLock = field(default_factory=threading.RLock)
    enqueue_lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryLedger:
    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()

    def _now(self) -> datetime:
        return self.store.clock()

    # --- schema and intake ------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        return []

    def ping(self) -> None:
        pass

    def enqueue(self, window: float | None = None) -> int | None:
        s = self.store
        if not s.enqueue_lock.acquire(blocking=False):
            return None
        try:
            with s.lock:
                now, changed = self._now(), 0
                last = s.meta.get("enqueued_at")
                if window is not None and last and datetime.fromisoformat(last) >= now - timedelta(seconds=window):
                    return None
                s.meta["enqueued_at"] = now.isoformat()
                for file_id, row in s.app.items():
                    if row.copied:
                        continue
                    f = s.files.get(file_id)
                    if f is None:
                        s.files[file_id] = FileRow(file_id, row.path, row.date_taken, row.gps, next_attempt_at=now,
                                                   updated_at=now)
                        changed += 1
                        continue
                    moved = f.path != row.path
                    if f.state == "done" or (moved and f.state != "done"):
                        for (fid, _), t in s.transfers.items():  # the old bytes are replaced
                            if fid == file_id and t.state == "done":
                                t.state, t.replace, t.resume_token = "pending", True, None
                    if f.state == "done" or moved:
                        f.state, f.attempts, f.next_attempt_at = "pending", 0, now
                        f.error = f.error_class = None
                        f.error_status = None
                    if f.state == "done" or (f.path, f.date_taken, f.gps) != (row.path, row.date_taken, row.gps):
                        changed += 1
                    f.path, f.date_taken, f.gps, f.updated_at = row.path, row.date_taken, row.gps, now
                return changed
        finally:
            s.enqueue_lock.release()

    def requeue_for_routes(self, routes: str, sinks_for: SinksFor) -> int:
        s = self.store
        with s.lock:
            if s.meta.get("routes") == routes:
                return 0
            s.meta["routes"] = routes
            changed = 0
            for f in s.files.values():
                if f.state not in ("done", "skipped") or f.mime is None:
                    continue
                wanted = sinks_for(f.mime)
                if wanted and any(self._transfer_state(f.file_id, name) != "done" for name in wanted):
                    f.state, f.next_attempt_at, f.attempts = "pending", self._now(), 0
                    f.error = f.error_class = None
                    f.error_status = None
                    changed += 1
            return changed

    # --- claims -----------------------------------------------------------------------------------
    def claim(self, worker: str, limit: int, lease_seconds: int, busy: Sequence[str] = (),
              run_id: int | None = None, selection: Selection | None = None) -> list[FileTask]:
        s = self.store
        sel = selection or Selection()
        with s.lock:
            now = self._now()
            due = sorted(
                (f for f in s.files.values()
                 if f.state == "pending" and f.next_attempt_at <= now and f.file_id not in busy
                 and (run_id is None or f.deferred_run != run_id) and _selected(f, sel)
                 and (f.claimed_until is None or f.claimed_until < now)),
                key=lambda f: (f.next_attempt_at, f.file_id),
            )[:limit]
            tasks = []
            for f in due:
                f.claimed_by, f.claimed_until, f.updated_at = worker, now + timedelta(seconds=lease_seconds), now
                tasks.append(self._task(f))
        time.sleep(0.0005)  # a round trip, as a database's would be: parallel claimers interleave
        return tasks

    def _task(self, f: FileRow) -> FileTask:
        mine = {sink: t for (fid, sink), t in self.store.transfers.items() if fid == f.file_id}
        return FileTask(
            file_id=f.file_id, path=f.path, date_taken=f.date_taken, gps=f.gps, attempts=f.attempts,
            done_sinks=frozenset(sink for sink, t in mine.items() if t.state == "done"),
            parked_sinks={sink: (t.error_class or "client", t.error or "") for sink, t in mine.items()
                          if t.state == "failed"},
            resume_tokens={sink: t.resume_token for sink, t in mine.items() if t.resume_token},
            replace_sinks=frozenset(sink for sink, t in mine.items() if t.replace and t.state == "pending"),
        )

    def heartbeat(self, worker: str, file_ids: Sequence[str], lease_seconds: int) -> int:
        with self.store.lock:
            held = [f for fid in file_ids if (f := self.store.files.get(fid)) and f.claimed_by == worker]
            for f in held:
                f.claimed_until = self._now() + timedelta(seconds=lease_seconds)
            return len(held)

    def release(self, worker: str, file_ids: Iterable[str] | None = None) -> int:
        with self.store.lock:
            wanted = set(file_ids) if file_ids is not None else None
            held = [f for f in self.store.files.values()
                    if f.claimed_by == worker and (wanted is None or f.file_id in wanted)]
            for f in held:
                f.claimed_by = f.claimed_until = None
            return len(held)

    def defer(self, worker: str, file_id: str, run_id: int) -> None:
        with self.store.lock:
            f = self.store.files.get(file_id)
            if f is not None and f.claimed_by == worker:
                f.claimed_by = f.claimed_until = None
                f.deferred_run = run_id

    def release_dead_on_host(self, worker_prefix: str, live_token: str) -> int:
        with self.store.lock:
            owners = {f.claimed_by for f in self.store.files.values()
                      if f.claimed_by and f.claimed_by.startswith(worker_prefix)}
        return sum(self.release(owner) for owner in dead_owners(sorted(owners), live_token))

    # --- outcomes (lease-checked) -----------------------------------------------------------------
    def _leased(self, worker: str, file_id: str) -> FileRow:
        f = self.store.files.get(file_id)
        if f is None or f.claimed_by != worker or f.claimed_until is None or f.claimed_until <= self._now():
            raise LeaseLost(f"lease on file {file_id} is no longer held by this worker")
        return f

    def _transfer(self, file_id: str, sink: str) -> TransferRow:
        return self.store.transfers.setdefault((file_id, sink), TransferRow())

    def _transfer_state(self, file_id: str, sink: str) -> str | None:
        t = self.store.transfers.get((file_id, sink))
        return t.state if t else None

    def claim_name(self, worker: str, file_id: str, sink: str, name: str) -> str:
        with self.store.lock:
            self._leased(worker, file_id)
            return self.store.names.setdefault((sink, name), file_id)

    def record_info(self, file_id: str, kind: str, mime: str, size: int) -> None:
        with self.store.lock:
            if f := self.store.files.get(file_id):
                f.kind, f.mime, f.size = str(kind), mime, size

    def save_resume_token(self, worker: str, file_id: str, sink: str, token: str | None) -> None:
        with self.store.lock:
            self._leased(worker, file_id)
            self._transfer(file_id, sink).resume_token = token

    def record_done(self, worker: str, file_id: str, sink: str, remote: RemoteObject,
                    routed: Sequence[str], path: str | None = None,
                    derivation: Mapping[str, Any] | None = None) -> bool:
        with self.store.lock:
            f = self._leased(worker, file_id)
            t = self._transfer(file_id, sink)
            if path is not None and f.path != path:
                t.state, t.replace, t.resume_token = "pending", True, None
                raise RowChanged(f"file {file_id} moved from {path!r} to {f.path!r} while it was copied")
            t.replace = False
            t.derivation = dict(derivation) if derivation else None
            t.state, t.attempts, t.remote_id, t.remote_url = "done", t.attempts + 1, remote.remote_id, remote.url
            t.bytes, t.checksum, t.done_at, t.resume_token = remote.size, remote.checksum, self._now(), None
            t.error_class = t.error = None
            t.error_status = None
            return self._complete_if_done(file_id, routed)

    def mark_complete(self, worker: str, file_id: str, routed: Sequence[str]) -> bool:
        with self.store.lock:
            self._leased(worker, file_id)
            return self._complete_if_done(file_id, routed)

    def _complete_if_done(self, file_id: str, routed: Sequence[str]) -> bool:
        if any(self._transfer_state(file_id, sink) != "done" for sink in routed):
            return False
        f = self.store.files[file_id]
        now = self._now()
        f.state, f.claimed_by, f.claimed_until, f.done_at, f.updated_at = "done", None, None, now, now
        f.error_class = f.error = None
        f.error_status = None
        if row := self.store.app.get(file_id):
            row.copied = True
        return True

    def record_transfer_failure(self, worker: str, file_id: str, sink: str, error_class: str, status: int | None,
                                error: str, permanent: bool) -> None:
        with self.store.lock:
            self._leased(worker, file_id)
            t = self._transfer(file_id, sink)
            t.state, t.attempts = ("failed" if permanent else "pending"), t.attempts + 1
            t.error_class, t.error_status, t.error = error_class, status, error[:1000]

    def make_due(self, file_ids: Sequence[str]) -> int:
        with self.store.lock:
            files = [f for fid in file_ids if (f := self.store.files.get(fid))
                     and f.state == "pending" and f.claimed_by is None]
            for f in files:
                f.next_attempt_at = self._now()
            return len(files)

    def record_failure(self, worker: str, file_id: str, *, error_class: str, status: int | None, error: str,
                       park: bool, retry_in: float, count: bool = True) -> tuple[str, int]:
        with self.store.lock:
            f = self._leased(worker, file_id)
            now = self._now()
            f.attempts += 1 if count else 0
            f.state = "failed" if park else "pending"
            f.next_attempt_at = now + timedelta(seconds=retry_in)
            f.error_class, f.error_status, f.error = error_class, status, error[:1000]
            f.claimed_by = f.claimed_until = None
            f.updated_at = now
            return f.state, f.attempts

    def record_skipped(self, worker: str, file_id: str, reason: str) -> None:
        with self.store.lock:
            f = self._leased(worker, file_id)
            f.state, f.error_class, f.error, f.error_status = "skipped", "unsupported", reason, None
            f.claimed_by = f.claimed_until = None

    # --- runs and reports -------------------------------------------------------------------------
    def start_run(self, worker: str) -> int:
        with self.store.lock:
            self.store.runs.append({"worker": worker, "status": "running", "started_at": self._now()})
            return len(self.store.runs)

    def finish_run(self, run_id: int, summary: RunSummary, status: str, error: str | None = None) -> None:
        with self.store.lock:
            self.store.runs[run_id - 1].update(
                status=status, finished_at=self._now(), copied=summary.copied, skipped=summary.skipped,
                failed=summary.failed, retry_later=summary.retry_later, bytes=summary.bytes, error=error)

    def scan(self, entries: Iterable[Entry], prefix: str = "", page: int = 1000) -> ScanCounts | None:
        counts, seen = ScanCounts(), set()
        with self.store.lock:
            for e in entries:
                counts.listed += 1
                seen.add(e.key)
                if SKIP in e.metadata:
                    counts.skipped += 1
                    continue
                known = self.store.catalog.get(e.key)
                now = (e.etag, e.size, e.modified, dict(e.metadata))
                if known == now and e.key in self.store.app:
                    continue
                row = self.store.app.get(e.key)
                changed = row is not None and (known is None or known[:2] != now[:2])
                if row is None:
                    counts.added += 1
                else:
                    counts.changed += 1
                self.store.catalog[e.key] = now
                self.store.app[e.key] = AppRow(path=e.key, date_taken=e.metadata.get("dateTaken"),
                                               gps=e.metadata.get("gpsCoordinates"),
                                               copied=bool(row and row.copied and not changed))
            for key in [k for k in self.store.app if k.startswith(prefix) and k not in seen]:
                del self.store.app[key]  # gone from the source: no longer copied
                counts.gone += 1
        return counts

    def catalog_counts(self) -> tuple[int, int, int, int]:
        with self.store.lock:
            copied = sum(1 for k in self.store.catalog if (r := self.store.app.get(k)) and r.copied)
            return len(self.store.catalog), 0, 0, copied

    def rows_without_id(self) -> int:
        return 0  # the memory app table is keyed by id: it cannot hold a row without one

    def backlog(self) -> int:
        with self.store.lock:
            now = self._now()
            return sum(1 for f in self.store.files.values() if f.state == "pending" and f.next_attempt_at <= now)

    def retry(self, file_ids: Sequence[str] | None = None) -> int:
        with self.store.lock:
            wanted = set(file_ids) if file_ids else None
            for (fid, _), t in self.store.transfers.items():
                if t.state == "failed" and (wanted is None or fid in wanted):
                    t.state, t.attempts = "pending", 0
            parked = [f for f in self.store.files.values()
                      if f.state == "failed" and (wanted is None or f.file_id in wanted)]
            for f in parked:
                f.state, f.attempts, f.next_attempt_at = "pending", 0, self._now()
                f.error = f.error_class = None
                f.error_status = None
            return len(parked)

    def state_counts(self) -> dict[str, int]:
        with self.store.lock:
            counts: dict[str, int] = {}
            for f in self.store.files.values():
                counts[f.state] = counts.get(f.state, 0) + 1
            return counts

    def problems(self, limit: int = 20) -> list[Problem]:
        with self.store.lock:
            rows = [f for f in self.store.files.values()
                    if f.state in ("failed", "skipped") or (f.state == "pending" and f.attempts > 0)]
            rows.sort(key=lambda f: f.updated_at, reverse=True)
            return [Problem(f.file_id, f.state, f.error_class or "", f.error_status, f.error or "", f.attempts,
                            f.updated_at) for f in rows[:limit]]

    def destinations(self) -> list[Destination]:
        with self.store.lock:
            out: list[Destination] = []
            for f in sorted(self.store.files.values(), key=lambda f: f.file_id):
                done = sorted((sink, t) for (fid, sink), t in self.store.transfers.items()
                              if fid == f.file_id and t.state == "done")
                if not done:
                    out.append((f.file_id, f.path, f.state, None, None, None))
                out += [(f.file_id, f.path, f.state, sink, t.remote_id, t.remote_url) for sink, t in done]
            return out

    def not_copied_index_hint(self) -> str | None:
        return None

    def copied_transfers(self, *, sample: int | None = None, since: datetime | None = None,
                         sink: str | None = None) -> list[CopiedTransfer]:
        with self.store.lock:
            rows = [
                CopiedTransfer(fid, name, t.remote_id, t.bytes, t.checksum, f.path, f.mime, f.kind, f.size,
                               f.date_taken, f.gps)
                for (fid, name), t in self.store.transfers.items()
                if t.state == "done" and (sink is None or name == sink)
                and (since is None or (t.done_at is not None and t.done_at >= since))
                and (f := self.store.files[fid])
            ]
        return random.sample(rows, min(sample, len(rows))) if sample is not None else rows

    def requeue_transfer(self, file_id: str, sink: str, reason: str) -> None:
        with self.store.lock:
            t = self.store.transfers.get((file_id, sink))
            if t is None:
                return
            self.store.transfers[(file_id, sink)] = replace(
                t, state="pending", remote_id=None, remote_url=None, done_at=None, attempts=0,
                error_class="not_found", error=reason[:1000])
            f = self.store.files[file_id]
            f.state, f.next_attempt_at, f.attempts = "pending", self._now(), 0

    def close(self) -> None:
        pass

    STALE_RUN = timedelta(hours=1)  # as queries.sql's running_runs

    def abandon_dead_runs(self, worker_prefix: str, live_token: str, run_id: int) -> int:
        with self.store.lock:
            now = self._now()
            live = {f.claimed_by for f in self.store.files.values()
                    if f.claimed_by and f.claimed_until is not None and f.claimed_until > now}
            running = [(i, run) for i, run in enumerate(self.store.runs, 1)
                       if run["status"] == "running" and i != run_id]
            dead = set(dead_owners([r["worker"] for _, r in running if r["worker"].startswith(worker_prefix)],
                                   live_token))
            abandoned = [run for _, run in running
                         if run["worker"] in dead or (not run["worker"].startswith(worker_prefix)
                                                      and run["started_at"] < now - self.STALE_RUN
                                                      and run["worker"] not in live)]
            for run in abandoned:
                run.update(status="abandoned",
                           error=f"abandoned: its process ended without finishing it (seen by run {run_id})")
            return len(abandoned)


_conforms: type[Ledger] = MemoryLedger


def _selected(f: FileRow, sel: Selection) -> bool:
    """The claim query's selection, in Python."""
    if sel.file_ids is not None and f.file_id not in sel.file_ids:
        return False
    regex = sel.path_regex()
    if regex is not None and not (f.path and re.match(regex, f.path)):
        return False
    if sel.since is not None or sel.until is not None:
        try:
            taken = datetime.fromisoformat(f.date_taken or "")
        except ValueError:
            return False
        if taken.tzinfo is None:
            taken = taken.replace(tzinfo=UTC)
        if (sel.since is not None and taken < sel.since) or (sel.until is not None and taken >= sel.until):
            return False
    return True
