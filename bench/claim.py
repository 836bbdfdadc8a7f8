"""The ledger at scale: an app table of a million rows, 1 % and 50 % of them not copied.

For each case, on a fresh database holding the `"File"` table (with the partial index the README
recommends): `Ledger.enqueue` timed in this process (the first run's intake), then `Ledger.claim(batch)`
timed as the pipeline calls it (pool checkout and one statement; each claim's files are then marked
skipped, untimed), then a `filesync run` with nothing due (the pending files are pushed a day ahead, as a
backoff would, and the table vacuumed, as autovacuum would after that), then `filesync status`. For the
two commands: the process's wall time and the database time (pg_stat_database.active_time over the
command: every statement, every connection).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import psycopg

from bench.harness import S3Process, TimedCloudflare, db_active_ms, run_env, run_filesync
from bench.report import Table, emit
from filesync.ledger import Database, PostgresLedger
from filesync.settings import Config, Environment
from filesync.testing.postgres import APP_TABLE_DDL, fresh_database

NOT_COPIED_INDEX = 'CREATE INDEX "File_not_copied_idx" ON "File" (id) WHERE "copiedToCloudflare" IS NOT TRUE'


@dataclass(frozen=True)
class Options:
    rows: int = 1_000_000
    not_copied: tuple[float, ...] = (0.01, 0.5)
    batch: int = 8
    claims: int = 500


def _fill(url: str, rows: int, every: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(APP_TABLE_DDL)
        conn.execute(
            'INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates", "copiedToCloudflare") '
            "SELECT 'f' || lpad(g::text, 8, '0'), 'img/' || g || '.jpg', now() - make_interval(secs => g), "
            "'48.8584,2.2945', g %% %s <> 0 FROM generate_series(1, %s) AS g", (every, rows))
        conn.execute(NOT_COPIED_INDEX)
        conn.execute('ANALYZE "File"')


def _case(pg_url: str, s3: S3Process, opts: Options, share: float, table: Table) -> None:
    every = round(1 / share)
    with fresh_database(pg_url, prefix="fs_bench") as url:
        print(f"  filling \"File\" with {opts.rows:,} rows, 1 in {every} not copied ...", flush=True)
        _fill(url, opts.rows, every)
        config = Config.load(Environment({"DATABASE_URL": url}, env_file=os.devnull))
        db = Database(url)
        ledger = PostgresLedger(db, config.schema, config.app)
        try:
            ledger.migrate()
            started = time.perf_counter()
            added = ledger.enqueue(None)
            enqueue_s = time.perf_counter() - started
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ANALYZE {config.schema}.files")
            timings: list[float] = []
            for _ in range(opts.claims):
                started = time.perf_counter()
                tasks = ledger.claim("bench", opts.batch, 300)
                timings.append((time.perf_counter() - started) * 1000)
                if not tasks:
                    break
                for task in tasks:
                    ledger.record_skipped("bench", task.file_id, "bench: claimed and set aside")
        finally:
            db.close()
        with psycopg.connect(url, autocommit=True) as conn:  # nothing due: as if every pending file backed off
            conn.execute(f"UPDATE {config.schema}.files SET next_attempt_at = now() + interval '1 day' "
                         "WHERE state = 'pending'")
            # Half a million rows rewritten at once: autovacuum would clean up after them before long; the
            # idle run measures that steady state, not a table full of dead row versions.
            conn.execute(f"VACUUM ANALYZE {config.schema}.files")
        bucket = s3.bucket()
        with TimedCloudflare() as cf:
            env = run_env(url, bucket, cf)
            before = db_active_ms(url)
            run = run_filesync(env)
            run_db = db_active_ms(url) - before
            before = db_active_ms(url)
            status = run_filesync(env, "status")
            status_db = db_active_ms(url) - before
    timings.sort()
    p50, p99 = statistics.median(timings), timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    emit("ledger", rows=opts.rows, not_copied=share, enqueued=added, enqueue_s=round(enqueue_s, 2),
         claims=len(timings), claim_batch=opts.batch, claim_p50_ms=round(p50, 3), claim_p99_ms=round(p99, 3),
         idle_run_s=round(run.wall_seconds, 2), idle_run_db_s=round(run_db / 1000, 3),
         status_s=round(status.wall_seconds, 2), status_db_s=round(status_db / 1000, 3))
    table.add(f"{opts.rows:,}", f"{share:.0%}", f"{added or 0:,}", f"{enqueue_s:.2f}", f"{p50:.2f}", f"{p99:.2f}",
              f"{run_db / 1000:.3f}", f"{run.wall_seconds:.2f}", f"{status_db / 1000:.3f}",
              f"{status.wall_seconds:.2f}")


def run(pg_url: str, s3: S3Process, opts: Options) -> Table:
    table = Table(f'Ledger at scale: the app\'s "File" table, claims of {opts.batch}',
                  ["rows", "not copied", "enqueued", "enqueue s", "claim p50 ms", "claim p99 ms",
                   "idle run db s", "idle run s", "status db s", "status s"])
    for share in opts.not_copied:
        _case(pg_url, s3, opts, share, table)
    table.notes.append(f"claims: {opts.claims} in a row, timed from the caller's side; idle run: `filesync run` "
                       "with every pending file due tomorrow; db s: pg_stat_database.active_time over the command.")
    table.notes.append("ratios do not apply here: neither baseline has a ledger.")
    return table
