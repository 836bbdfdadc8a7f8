"""A real PostgreSQL for tests and the zero-config default: TEST_DATABASE_URL when given, else embedded pgserver."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from filesync.ledger.embedded import APP_TABLE_DDL, start_embedded, with_database

__all__ = ["APP_TABLE_DDL", "embedded_server_url", "fresh_database", "test_server_url", "with_database"]

def embedded_server_url(data_dir: Path) -> str:
    """Start (or reuse) a pgserver instance in `data_dir` and return its URL."""
    return start_embedded(data_dir)


@contextmanager
def fresh_database(server_url: str, prefix: str = "fs_test") -> Iterator[str]:
    """A new empty database on the server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_server_url(tmp_root: Path) -> str:
    return os.environ.get("TEST_DATABASE_URL") or embedded_server_url(tmp_root / "pgdata")
