"""A real PostgreSQL for tests and the zero-config default: TEST_DATABASE_URL when given, else embedded pgserver."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

APP_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS "File" (
  id                   text PRIMARY KEY,
  path                 text,
  "dateTaken"          timestamptz,
  "gpsCoordinates"     text,
  "copiedToCloudflare" boolean NOT NULL DEFAULT false
)
"""


def embedded_server_url(data_dir: Path) -> str:
    """Start (or reuse) a pgserver instance in `data_dir` and return its URL."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


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
