"""Issue 11: a lean ledger. The database round trips a file costs, counted on the wire and bounded.

A proxy between filesync and PostgreSQL counts every round trip the client makes (each simple query and
each Sync of an extended query), whatever the pool, the driver or the ledger does. A run's fixed cost
(migrations check, run record, enqueue, status counts) is measured on a run with nothing to do and taken
off; what remains, divided by the files, is what one file costs. Before the lean ledger it was about 16
(a pool check, BEGIN and COMMIT around each of record_info, record_done's five statements and the claim's
two); now the claim is one statement for several files and each outcome one statement with its lease check.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from filesync import pipeline
from filesync.app import App
from filesync.settings import Environment
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.pgwire import RoundTripCounter
from tests.conftest import S3Server, cloudflare_env
from tests.media import image_bytes

TOKEN = "cf-token-round-trips-0xSECRET"
FILES = 24
#: Per file: its outcome (1) and its share of a claim (1 statement for up to `concurrency` files: all of it at
#: concurrency 1), with slack for heartbeats and the driver preparing a statement on a connection's fifth use.
MOST_PER_FILE = 2.5


def run_counted(env: Environment, proxy: RoundTripCounter) -> tuple[int, int]:
    """(files copied, round trips) of one `filesync run`, in process."""
    with App.build(env) as app:
        before = proxy.round_trips
        summary = pipeline.run(app)
        return summary.copied, proxy.round_trips - before


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_copied_file_costs_about_two_database_round_trips(
    tmp_path: Path, database_url: str, s3: S3Server, concurrency: int
) -> None:
    with RoundTripCounter(database_url) as proxy, FakeCloudflare(token=TOKEN) as cf:
        env = Environment({**cloudflare_env(proxy.url, s3, cf, TOKEN), "FILESYNC_ROUTES": "image/*=cloudflare-images",
                           "CLOUDFLARE_IMAGES_BATCH_BASE": cf.batch_base,
                           "FILESYNC_CONCURRENCY": str(concurrency)}, env_file=os.devnull)
        run_counted(env, proxy)  # migrations, first contact
        copied, idle = run_counted(env, proxy)
        assert copied == 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            for i in range(FILES):
                key = f"photos/{i:03}.jpg"
                s3.put(key, image_bytes("JPEG", color=(i * 7 % 256, 40, 90)), "image/jpeg")
                conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (f"f{i:03}", key))
        copied, busy = run_counted(env, proxy)

    assert copied == FILES
    assert len(cf.images.stored()) == FILES
    per_file = (busy - idle) / FILES
    print(f"concurrency {concurrency}: a run with nothing to do {idle} round trips; {FILES} files {busy}: "
          f"{per_file:.2f} per file")
    assert per_file <= MOST_PER_FILE, f"{per_file:.2f} round trips per file (idle run {idle}, busy run {busy})"
    with psycopg.connect(database_url) as conn:
        flagged = conn.execute('SELECT count(*) FROM "File" WHERE "copiedToCloudflare"').fetchone()
        kinds = conn.execute("SELECT count(*) FROM filesync.files WHERE kind = 'image' AND mime = 'image/jpeg' "
                             "AND size > 0").fetchone()
    assert flagged == (FILES,)
    assert kinds == (FILES,)  # the inspection was recorded with the outcome, not lost on the way
