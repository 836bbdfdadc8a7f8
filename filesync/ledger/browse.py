"""The file browser's read models: a keyset-paginated list of files and one file's whole story.

The status API (`GET /api/files`, `GET /api/files/{id}`) reads these; SQL lives in browse.sql as named
blocks with a description each, like queries.sql. Pages follow the primary key (`file_id > cursor`), never
OFFSET: page 1,000 costs what page 1 costs, and a file that changes state between two pages is neither
shown twice nor skipped for the files after it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cache
from typing import Any

from filesync.ledger.reports import STATES
from filesync.ledger.sql import Queries
from filesync.ledger.store import PostgresLedger
from filesync.settings import AppTable

__all__ = ["STATES", "FilePage", "FileRecord", "FileStory", "files", "story"]

MAX_PAGE = 500


@cache
def _queries(schema: str, app: AppTable) -> Queries:
    return Queries(schema, app, "browse.sql")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class TransferRecord:
    """One (file, destination) transfer as the ledger holds it now."""

    sink: str
    state: str
    attempts: int
    remote_id: str | None
    url: str | None
    bytes: int | None
    checksum: str | None
    error_class: str | None
    error_status: int | None
    error: str | None
    replace: bool  # the destination holds older bytes that the next transfer replaces
    resumable: bool  # an interrupted upload left a resume point (the token itself is never shown)
    updated_at: datetime
    done_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink, "state": self.state, "attempts": self.attempts, "remote_id": self.remote_id,
            "url": self.url, "bytes": self.bytes, "checksum": self.checksum, "error_class": self.error_class,
            "error_status": self.error_status, "error": self.error, "replace": self.replace,
            "resumable": self.resumable, "updated_at": _iso(self.updated_at), "done_at": _iso(self.done_at),
        }


@dataclass(frozen=True)
class FileRecord:
    """A file of the list: its ledger row and every destination's transfer."""

    file_id: str
    path: str | None
    state: str
    kind: str | None
    mime: str | None
    size: int | None
    attempts: int
    next_attempt_at: datetime
    error_class: str | None
    error_status: int | None
    error: str | None
    first_seen: datetime
    updated_at: datetime
    done_at: datetime | None
    transfers: tuple[TransferRecord, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id, "path": self.path, "state": self.state, "kind": self.kind, "mime": self.mime,
            "size": self.size, "attempts": self.attempts, "next_attempt_at": _iso(self.next_attempt_at),
            "error_class": self.error_class, "error_status": self.error_status, "error": self.error,
            "first_seen": _iso(self.first_seen), "updated_at": _iso(self.updated_at), "done_at": _iso(self.done_at),
            "transfers": [t.as_dict() for t in self.transfers],
        }


@dataclass(frozen=True)
class FilePage:
    files: list[FileRecord]
    next_cursor: str | None  # None on the last page

    def as_dict(self) -> dict[str, Any]:
        return {"files": [f.as_dict() for f in self.files], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class NameRecord:
    sink: str
    name: str
    claimed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "name": self.name, "claimed_at": _iso(self.claimed_at)}


@dataclass(frozen=True)
class FileStory:
    """Everything the ledger knows about one file: its row, each transfer, its names, the app's flag.

    The ledger keeps the latest outcome of each transfer and the count of attempts, not a row per attempt.
    """

    file: FileRecord
    date_taken: str | None
    gps: str | None
    claimed_by: str | None  # the worker holding a live lease on it now
    claimed_until: datetime | None
    deferred_run: int | None  # the run that handed it back uncounted (a destination was stopped)
    app_copied: bool | None  # the app's flag; None when the app's table no longer lists the file
    names: list[NameRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.file.as_dict(), "date_taken": self.date_taken, "gps": self.gps, "claimed_by": self.claimed_by,
            "claimed_until": _iso(self.claimed_until), "deferred_run": self.deferred_run,
            "app_copied": self.app_copied, "names": [n.as_dict() for n in self.names],
        }


def encode_cursor(file_id: str) -> str:
    """An opaque cursor for the page after `file_id` (URL-safe, no padding)."""
    return base64.urlsafe_b64encode(file_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The file id a cursor continues after; ValueError for one this module did not make."""
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("cursor is not one this API returned") from None


def files(ledger: PostgresLedger, *, state: str | None = None, sink: str | None = None, q: str | None = None,
          cursor: str | None = None, limit: int = 50) -> FilePage:
    """One page of files in id order: those in `state` (one of STATES), with a transfer to `sink`, whose id or
    path contains `q` (case-insensitive), after `cursor`. ValueError for a state or cursor that is not one."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be from 1 to {MAX_PAGE}")
    after = decode_cursor(cursor) if cursor else None
    q_ = _queries(ledger.schema, ledger.app)
    with ledger.db.transaction() as conn:
        rows = conn.execute(q_["browse_files"], {
            "after": after, "state": state, "sink": sink, "q": q or None, "limit": limit + 1,
        }).fetchall()
        page, more = rows[:limit], len(rows) > limit
        transfers = _transfers(conn, q_, [r[0] for r in page])
    found = [_file(row, transfers.get(row[0], ())) for row in page]
    return FilePage(found, encode_cursor(found[-1].file_id) if more and found else None)


def story(ledger: PostgresLedger, file_id: str) -> FileStory | None:
    """One file's whole story, or None when the ledger has no such file."""
    q_ = _queries(ledger.schema, ledger.app)
    with ledger.db.transaction() as conn:
        row = conn.execute(q_["browse_file"], {"file_id": file_id}).fetchone()
        if row is None:
            return None
        transfers = _transfers(conn, q_, [file_id])
        names = [NameRecord(*r) for r in conn.execute(q_["browse_names"], {"file_id": file_id})]
        flag = conn.execute(q_["browse_app_flag"], {"file_id": file_id}).fetchone()
    record = _file(row, transfers.get(file_id, ()))
    date_taken, gps, claimed_by, claimed_until, deferred_run = row[14:]
    return FileStory(record, date_taken, gps, claimed_by, claimed_until, deferred_run,
                     None if flag is None else bool(flag[0]), names)


_FILE_COLUMNS = [f.name for f in fields(FileRecord) if f.name != "transfers"]


def _file(row: Sequence[Any], transfers: tuple[TransferRecord, ...]) -> FileRecord:
    """A FileRecord from the first columns of browse_files or browse_file, which share their order."""
    return FileRecord(**dict(zip(_FILE_COLUMNS, row, strict=False)), transfers=transfers)


def _transfers(conn: Any, q_: Queries, ids: list[str]) -> dict[str, tuple[TransferRecord, ...]]:
    if not ids:
        return {}
    found: dict[str, list[TransferRecord]] = {}
    for file_id, *rest in conn.execute(q_["browse_transfers"], {"ids": ids}):
        found.setdefault(file_id, []).append(TransferRecord(*rest))
    return {k: tuple(v) for k, v in found.items()}
