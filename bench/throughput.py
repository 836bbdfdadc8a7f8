"""Benchmark 1: many small images, S3 (moto) -> Cloudflare Images (fake), at several concurrencies.

Pacing is set far above what the machine can reach so it does not limit the result. The rate uses
filesync's own run record (claim to last mark), so interpreter start-up and migrations are left out;
the wall time of the whole `filesync run` process is shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import MotoProcess, TimedCloudflare, add_rows, app_database, last_run, run_env, run_filesync
from bench.media import put_images
from bench.report import Table, mb


@dataclass(frozen=True)
class Options:
    count: int = 500
    image_bytes: int = 50_000
    concurrencies: tuple[int, ...] = (1, 4, 8)


def run(pg_url: str, moto: MotoProcess, opts: Options) -> Table:
    table = Table(f"1. Throughput: {opts.count} JPEGs of ~{opts.image_bytes // 1000} KB, S3 -> Cloudflare Images",
                  ["concurrency", "copied", "MB", "run s", "files/s", "MB/s", "process s", "peak RSS MiB"])
    bucket = moto.bucket()
    keys, total = put_images(bucket, opts.count, opts.image_bytes)
    rows = [(f"f{n:06d}", key) for n, key in enumerate(keys)]
    for concurrency in opts.concurrencies:
        with app_database(pg_url) as db, TimedCloudflare() as cf:
            add_rows(db, rows)
            env = run_env(db, bucket, cf, FILESYNC_CONCURRENCY=str(concurrency))
            proc = run_filesync(env)
            record = last_run(db)
            seconds = record["seconds"] or proc.wall_seconds
            table.add(concurrency, record["copied"], mb(record["bytes"]), f"{seconds:.1f}",
                      f"{record['copied'] / seconds:.1f}", f"{record['bytes'] / seconds / 1e6:.2f}",
                      f"{proc.wall_seconds:.1f}", f"{proc.peak_rss_bytes / 2**20:.0f}")
    table.notes.append(f"{opts.count} objects, {mb(total)} MB in total; FILESYNC_CLOUDFLARE_RPS=100000 "
                       "(pacing out of the way); claims take min(free workers, FILESYNC_CLAIM_BATCH=8).")
    table.notes.append("run s: filesync.runs finished_at - started_at; process s: the whole `filesync run` "
                       "process, start-up included.")
    return table
