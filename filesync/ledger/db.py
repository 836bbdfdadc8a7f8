"""Connections: a pool on DATABASE_URL or on the embedded PostgreSQL, and driver errors translated once."""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from filesync.errors import LedgerError, LedgerUnavailable
from filesync.ledger.embedded import start_embedded

logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

CONNECT_TIMEOUT = 10  # seconds one connection attempt may take (libpq's connect_timeout)

#: What to check for the usual reasons a connection is refused, keyed by a phrase of libpq's message.
_HINTS = (
    ("password authentication failed", "check the user and password in DATABASE_URL"),
    ("no password supplied", "DATABASE_URL needs the user's password"),
    ("role \"", "check the user in DATABASE_URL"),
    ("does not exist", "check the database name in DATABASE_URL"),
    ("server does not support SSL", "the server has no TLS: remove sslmode=require from DATABASE_URL, "
                                    "or enable ssl on the server"),
    ("Connection refused", "is PostgreSQL running and listening at that host and port?"),
    ("No such file or directory", "is PostgreSQL running, with its socket in that folder?"),
    ("resolve host", "check the host name in DATABASE_URL"),
    ("translate host name", "check the host name in DATABASE_URL"),
    ("timeout expired", f"no answer within {CONNECT_TIMEOUT} s: check the host, port and firewall"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf does not admit this user, database or address"),
)


def redact_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def embedded_url(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL kept in FILESYNC_HOME/pgdata."""
    return start_embedded(home / "pgdata")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors as ours: unreachable -> LedgerUnavailable, anything else -> LedgerError."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise LedgerUnavailable(f"PostgreSQL is unreachable: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise LedgerError(f"database error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def connect_failure(exc: BaseException) -> str:
    """libpq's reason a connection failed, on one line, with what to check for the usual causes."""
    reason = re.sub(r"\s+", " ", _first_line(exc)).removeprefix("connection failed: ")
    hint = next((h for phrase, h in _HINTS if phrase in reason), None)
    return f"{reason} ({hint})" if hint else reason


def probe(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why one direct connection to `url` fails, or None when it works.

    The pool retries a failing connection quietly until its timeout and then only says it timed out;
    one attempt of our own gets libpq's reason (wrong password, no such database, refused, no TLS).
    """
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout)), application_name="filesync"):
            return None
    except psycopg.Error as exc:
        return connect_failure(exc)


def check_cheaply(conn: psycopg.Connection[Any]) -> None:
    """The pool's check before handing out a connection, without a round trip when the connection looks sound.

    A server that restarts, or ends the session, first writes a FATAL message and closes the socket, so a
    dead idle connection has something to read; a sound one has nothing. Only then (or when the connection
    is not idle) is the round trip of psycopg's own check paid. Connections idle longer than the pool's
    max_idle are closed by the pool, so a silently dropped one is not kept for long.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    if conn.info.transaction_status == TransactionStatus.IDLE:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        if not readable:
            return
    ConnectionPool.check_connection(conn)


class Database:
    """A small pool of autocommit connections; each is checked before use so a restarted server is reconnected.

    `statement()` runs one statement on its own (PostgreSQL makes it a transaction: one round trip, no
    BEGIN and COMMIT); `transaction()` wraps several. The first use makes one direct connection first, so a
    database that cannot be reached at all fails at once with libpq's reason instead of after the pool's
    wait; once it has been reached, an outage is the pool's to ride out.
    """

    def __init__(self, url: str, *, max_size: int = 8, timeout: float = 15.0) -> None:
        self.url = url
        self._reached = False
        self._first_contact = threading.Lock()
        self._pool = ConnectionPool(
            url,
            min_size=0,
            max_size=max_size,
            timeout=timeout,
            open=False,
            check=check_cheaply,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": "filesync"},
            reconnect_timeout=timeout,
        )
        with translated():
            self._pool.open(wait=False)

    def _reach(self) -> None:
        with self._first_contact:
            if self._reached:
                return
            reason = probe(self.url)
            if reason is not None:
                raise LedgerUnavailable(f"cannot connect to PostgreSQL: {reason}")
            self._reached = True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self._connection(transaction=True) as conn:
            yield conn

    @contextlib.contextmanager
    def statement(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one statement, committed by PostgreSQL as it ends (autocommit)."""
        with self._connection(transaction=False) as conn:
            yield conn

    @contextlib.contextmanager
    def _connection(self, *, transaction: bool) -> Iterator[psycopg.Connection[Any]]:
        if not self._reached:
            self._reach()
        try:
            with translated(), self._pool.connection() as conn:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except LedgerUnavailable as exc:
            if not isinstance(exc.__cause__, PoolTimeout):
                raise
            # The pool only says it waited; say why its connections fail, when they do.
            reason = probe(self.url)
            if reason is None:
                raise
            raise LedgerUnavailable(f"{exc}; connecting now: {reason}") from exc.__cause__

    def close(self) -> None:
        self._pool.close()
