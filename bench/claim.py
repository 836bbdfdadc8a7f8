"""Benchmark 4: what one claim costs with a large ledger.

100k rows are inserted straight into filesync.files, then `Ledger.claim(batch=8)` is timed as the
pipeline calls it (pool checkout, the claim, the transfers lookup, commit). After each claim its rows are
marked done, untimed, as a run would. Cases:
  same time   every row has one next_attempt_at: what `enqueue` writes for a whole table in one statement
  spread      one next_attempt_at per row (files that failed and were rescheduled at different times)
  mostly done 99% done, 1% pending: a ledger in steady state
EXPLAIN (ANALYZE) of the claim shows whether the partial index files_due_idx is used and how many rows the
plan reads to return 8.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.report import Table
from filesync.ledger import Database, PostgresLedger
from filesync.settings import Config, Environment
from filesync.testing.postgres import fresh_database

CASES = {
    "same time": ("'pending'", "now()"),
    "spread": ("'pending'", "now() - make_interval(secs => g)"),
    "mostly done": ("CASE WHEN g %% 100 = 0 THEN 'pending' ELSE 'done' END", "now() - make_interval(secs => g)"),
}


@dataclass(frozen=True)
class Options:
    rows: int = 100_000
    batch: int = 8
    claims: int = 200
    extra_index: bool = True  # also time "same time" with an index on (next_attempt_at, file_id)


def plan_summary(conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, object]) -> tuple[str, str]:
    """(indexes used and rows read, execution ms) of the claim, rolled back."""
    with conn.transaction(force_rollback=True):
        lines = [str(r[0]) for r in conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + query, params)]
    plan = "\n".join(lines)
    indexes = sorted(set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", plan)))
    seq = "Seq Scan on files" in plan
    sort = re.search(r"Sort Method: ([\w-]+(?: \w+)?)", plan)
    executed = re.search(r"Execution Time: ([\d.]+) ms", plan)
    scans = re.findall(r"(?:Index|Seq) Scan[^\n]*actual time=[\d.]+\.\.[\d.]+ rows=(\d+)", plan)
    what = ", ".join(indexes) or "no index"
    if seq:
        what += " + seq scan"
    if scans:
        what += f", {max(int(s) for s in scans)} rows read"
    if sort:
        what += f", sort: {sort.group(1)}"
    return what, executed.group(1) if executed else "?"


def _fill(conn: psycopg.Connection[Any], rows: int, state: str, due: str) -> None:
    conn.execute(sql.SQL(
        "INSERT INTO filesync.files (file_id, path, state, next_attempt_at) "
        "SELECT 'f' || lpad(g::text, 8, '0'), 'img/' || g || '.jpg', {}, {} FROM generate_series(1, %s) AS g"
    ).format(sql.SQL(state), sql.SQL(due)), (rows,))
    conn.execute("ANALYZE filesync.files")


def _case(pg_url: str, opts: Options, name: str, state: str, due: str, index: bool, table: Table) -> None:
    with fresh_database(pg_url, prefix="fs_bench") as url:
        config = Config.load(Environment({"DATABASE_URL": url}, env_file=os.devnull))
        db = Database(url)
        ledger = PostgresLedger(db, config.schema, config.app)
        try:
            ledger.migrate()
            with psycopg.connect(url, autocommit=True) as conn:
                _fill(conn, opts.rows, state, due)
                if index:
                    conn.execute("CREATE INDEX files_due_id_idx ON filesync.files (next_attempt_at, file_id) "
                                 "WHERE state = 'pending'")
                    conn.execute("ANALYZE filesync.files")
                pending = conn.execute("SELECT count(*) FROM filesync.files WHERE state = 'pending'").fetchone()
                params: dict[str, object] = {"worker": "bench", "limit": opts.batch, "lease": 300}
                plan, plan_ms = plan_summary(conn, ledger.q["claim"], params)
                timings = []
                for _ in range(opts.claims):
                    started = time.perf_counter()
                    tasks = ledger.claim("bench", opts.batch, 300)
                    timings.append((time.perf_counter() - started) * 1000)
                    if not tasks:
                        break
                    conn.execute("UPDATE filesync.files SET state = 'done', claimed_by = NULL, "
                                 "claimed_until = NULL WHERE file_id = ANY(%s)", ([t.file_id for t in tasks],))
        finally:
            db.close()
    timings.sort()
    label = name + (" + (next_attempt_at, file_id) index" if index else "")
    table.add(label, f"{opts.rows:,}", f"{pending[0] if pending else 0:,}", len(timings),
              f"{statistics.median(timings):.2f}", f"{timings[int(len(timings) * 0.95) - 1]:.2f}",
              f"{timings[-1]:.2f}", plan_ms, plan)


def run(pg_url: str, opts: Options) -> Table:
    table = Table(f"4. Ledger claim: batch {opts.batch}, {opts.claims} claims in a row",
                  ["case", "rows", "pending", "claims", "p50 ms", "p95 ms", "max ms", "EXPLAIN ms",
                   "plan (first claim)"])
    for name, (state, due) in CASES.items():
        _case(pg_url, opts, name, state, due, False, table)
    if opts.extra_index:
        state, due = CASES["same time"]
        _case(pg_url, opts, "same time", state, due, True, table)
    table.notes.append("timed: Ledger.claim() from the caller's side (pool checkout, claim, transfers lookup, "
                       "commit); each claim's rows are then marked done, untimed.")
    table.notes.append("the last row adds an index the migrations do not have, to show what it would change.")
    return table
