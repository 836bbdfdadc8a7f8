"""Connections: a pool on DATABASE_URL or on the embedded PostgreSQL, and driver errors translated once."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from filesync.errors import LedgerError, LedgerUnavailable
from filesync.ledger.embedded import start_embedded

logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


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


class Database:
    """A small pool; connections are checked before use so a restarted server is reconnected."""

    def __init__(self, url: str, *, max_size: int = 8, timeout: float = 15.0) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=0,
            max_size=max_size,
            timeout=timeout,
            open=False,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": False, "connect_timeout": 10, "application_name": "filesync"},
            reconnect_timeout=timeout,
        )
        with translated():
            self._pool.open(wait=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with translated(), self._pool.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self._pool.close()
