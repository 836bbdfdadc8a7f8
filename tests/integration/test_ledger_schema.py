"""Migrations are idempotent, and configured names (schema, table, columns) are quoted, not formatted."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from filesync import pipeline
from filesync.app import App
from filesync.ledger import Database
from filesync.ledger.migrations import available, current_version, migrate
from filesync.settings import Environment
from tests.media import image_bytes


def test_migrating_twice_is_a_no_op(database_url: str) -> None:
    db = Database(database_url)
    try:
        first = migrate(db, "fs ledger")
        second = migrate(db, "fs ledger")
        assert first == [v for v, _, _ in available()]
        assert second == []
        assert current_version(db, "fs ledger") == max(first)
    finally:
        db.close()
    with psycopg.connect(database_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'fs ledger'")}
    assert {"files", "transfers", "runs", "migrations"} <= tables


def test_awkward_configured_names_work_end_to_end(tmp_path: Path, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "media app"')
        conn.execute('CREATE TABLE "media app"."Photo ""Files""" ("photo id" uuid PRIMARY KEY, "object key" text, '
                     '"taken at" timestamptz, "where" text, "is copied" boolean NOT NULL DEFAULT false)')
        conn.execute('INSERT INTO "media app"."Photo ""Files""" VALUES '
                     "('7f1c2a9e-0000-4000-8000-000000000001', 'p.jpg', now(), '1,2', false)")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "p.jpg").write_bytes(image_bytes())
    env = {
        "DATABASE_URL": database_url, "FILESYNC_SCHEMA": "fs; DROP TABLE x", "FILESYNC_FILES_TABLE":
        'media app.Photo "Files"', "FILESYNC_ID_COLUMN": "photo id", "FILESYNC_PATH_COLUMN": "object key",
        "FILESYNC_DATE_TAKEN_COLUMN": "taken at", "FILESYNC_GPS_COLUMN": "where", "FILESYNC_COPIED_COLUMN":
        "is copied", "FILESYNC_SOURCE": "local", "FILESYNC_SOURCE_DIR": str(tmp_path / "src"),
        "FILESYNC_ROUTES": "image/*=local", "FILESYNC_LOCAL_DIR": str(tmp_path / "out"),
        "FILESYNC_LOG_FILE": os.devnull,
    }
    with App.build(Environment(env, env_file=os.devnull)) as app:
        summary = pipeline.run(app)
    assert summary.copied == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute('SELECT "is copied" FROM "media app"."Photo ""Files"""').fetchone() == (True,)
        assert conn.execute('SELECT count(*) FROM "fs; DROP TABLE x".files').fetchone() == (1,)
    assert (tmp_path / "out" / "7f1c2a9e-0000-4000-8000-000000000001.jpg").is_file()
