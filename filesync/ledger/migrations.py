"""Versioned, idempotent migrations of filesync's own schema, applied in order under an advisory lock."""

from __future__ import annotations

import re
from importlib.resources import files

from psycopg import sql

from filesync.ledger.db import Database

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql text) of every shipped migration, oldest first."""
    found = []
    for entry in files("filesync.ledger").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def migrate(db: Database, schema: str) -> list[int]:
    """Bring the schema to the newest version; returns the versions applied now (none when up to date)."""
    ident = sql.Identifier(schema)
    applied_now: list[int] = []
    with db.transaction() as conn:
        # One migrator at a time across every worker sharing this database.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"filesync-migrate:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        done = {row[0] for row in conn.execute(sql.SQL("SELECT version FROM {}.migrations").format(ident))}
        for version, name, text in available():
            if version in done:
                continue
            conn.execute(sql.SQL(text).format(schema=ident))
            conn.execute(
                sql.SQL("INSERT INTO {}.migrations (version, name) VALUES (%s, %s)").format(ident), (version, name)
            )
            applied_now.append(version)
    return applied_now


def current_version(db: Database, schema: str) -> int | None:
    with db.transaction() as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'migrations'",
            (schema,),
        ).fetchone()
        if not exists:
            return None
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}.migrations").format(sql.Identifier(schema))).fetchone()
        return int(row[0]) if row and row[0] is not None else None
