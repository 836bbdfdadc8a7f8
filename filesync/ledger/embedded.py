"""The embedded PostgreSQL (pgserver) behind the zero-config default, and the app table the demo seeds.

One function starts it, for `filesync run` without DATABASE_URL, the demo and the tests alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from filesync.errors import LedgerUnavailable

#: The app's table as the README describes it (the demo and the tests create it).
APP_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS "File" (
  id                   text PRIMARY KEY,
  path                 text,
  "dateTaken"          timestamptz,
  "gpsCoordinates"     text,
  "copiedToCloudflare" boolean NOT NULL DEFAULT false
)
"""


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the pgserver instance in `data_dir`; its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver asks platformdirs for a runtime folder, which must be private (0700) or it warns.
    runtime = data_dir.parent / "run"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a dependency
        raise LedgerUnavailable("DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is missing") from exc
    try:
        server = pgserver.get_server(str(data_dir), cleanup_mode=None)  # type: ignore[attr-defined]
    except Exception as exc:
        raise LedgerUnavailable(f"embedded PostgreSQL in {data_dir} did not start: {exc}") from exc
    return str(server.get_uri())


def with_database(url: str, dbname: str) -> str:
    """The same server URL, naming another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server; its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def seed_app_table(url: str, rows: Iterable[tuple[str, str, datetime | None, str | None]]) -> None:
    """Create the app's `"File"` table and add (id, path, dateTaken, gpsCoordinates) rows."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(APP_TABLE_DDL)
        cur.executemany('INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates") VALUES (%s, %s, %s, %s)',
                        list(rows))
