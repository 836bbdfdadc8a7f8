"""The benchmark suite: `python -m bench [--quick] [--only NAME ...] [--markdown]` (or `make bench`).

Starts its own PostgreSQL (embedded pgserver, or TEST_DATABASE_URL), an S3 server that keeps connections
alive (moto behind waitress, its own process) and the fake Cloudflare with a latency per call, and runs
the real `filesync run` as a child process. Each measured case prints one JSON line as it ends; the tables
come at the end. Numbers are printed, never asserted: they depend on the machine and on what else it does.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py` from anywhere

from bench import claim, idle, memory, pacing, throughput, transform_memory
from bench.harness import S3Process, pg_server_url
from bench.report import Table, markdown, text

NAMES = ("images", "videos", "memory", "ledger", "account-limit", "idle", "transforms")


def ints(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.split(",") if x.strip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every count shrunk: under two minutes")
    p.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="scenarios to run")
    p.add_argument("--markdown", action="store_true", help="print the final tables as Markdown")
    p.add_argument("--images", type=int, help="small images (default 1000; quick 40)")
    p.add_argument("--concurrency", type=ints, help="concurrencies for images (default 1,4,8,16; quick 1,8)")
    p.add_argument("--latency-ms", type=ints, help="latency per Cloudflare call (default 0,80; quick 0,80)")
    p.add_argument("--videos", type=int, help="videos to Stream (default 20; quick 2)")
    p.add_argument("--video-mb", type=int, help="MB per video (default 50; quick 16)")
    p.add_argument("--large-mib", type=ints, help="video sizes for memory (default 256,2048; quick 16,64)")
    p.add_argument("--ledger-rows", type=int, help='rows of the "File" table (default 1000000; quick 30000)')
    p.add_argument("--window", type=float, help="seconds measured under the account limit (default 30; quick 5)")
    return p.parse_args(argv)


def pick(value: object, quick: bool, full: object, short: object) -> object:
    if value is not None:
        return value
    return short if quick else full


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    q = args.quick
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"filesync bench, {when}, {os.cpu_count()} CPUs{' (quick)' if q else ''}: {', '.join(args.only)}",
          flush=True)
    started = time.monotonic()
    pg = pg_server_url()
    tables: list[Table] = []
    latencies: tuple[int, ...] = pick(args.latency_ms, q, (0, 80), (0, 80))  # type: ignore[assignment]
    with S3Process() as s3:
        needs_images = {"images", "account-limit"} & set(args.only)
        if needs_images:
            concurrencies: tuple[int, ...] = pick(args.concurrency, q, (1, 4, 8, 16), (1, 8))  # type: ignore[assignment]
            limit = pacing.Options(seconds=pick(args.window, q, 30.0, 5.0))  # type: ignore[arg-type]
            if "account-limit" in args.only and limit.concurrency not in concurrencies:
                concurrencies = (*concurrencies, limit.concurrency)
            if "account-limit" in args.only and limit.latency_ms not in latencies:
                latencies = (*latencies, limit.latency_ms)
            table, refs, bucket, keys = throughput.images(pg, s3, throughput.ImageOptions(
                count=pick(args.images, q, 1000, 40),  # type: ignore[arg-type]
                concurrencies=concurrencies, latencies_ms=latencies))
            if "images" in args.only:
                tables.append(table)
            if "account-limit" in args.only:
                tables.append(pacing.run(pg, bucket, keys, refs, limit))
        if "videos" in args.only:
            tables.append(throughput.videos(pg, s3, throughput.VideoOptions(
                count=pick(args.videos, q, 20, 2),  # type: ignore[arg-type]
                video_bytes=int(pick(args.video_mb, q, 50, 16)) * 1_000_000,  # type: ignore[call-overload]
                latencies_ms=latencies)))
        if "memory" in args.only:
            tables.append(memory.run(pg, s3, memory.Options(
                sizes_mib=pick(args.large_mib, q, (256, 2048), (16, 64)))))  # type: ignore[arg-type]
        if "ledger" in args.only:
            tables.append(claim.run(pg, s3, claim.Options(
                rows=pick(args.ledger_rows, q, 1_000_000, 30_000),  # type: ignore[arg-type]
                claims=pick(None, q, 500, 100))))  # type: ignore[arg-type]
        if "idle" in args.only:
            tables.append(idle.run(pg, s3, idle.Options(seconds=pick(None, q, 60.0, 10.0))))  # type: ignore[arg-type]
    if "transforms" in args.only:  # issue 14: a 100 MP JPEG fitted at concurrency 4 (quick: 20 MP)
        tables.append(transform_memory.run(megapixels=20 if q else 100, threads=4))
    print()
    for table in tables:
        print(markdown(table) if args.markdown else text(table), end="\n\n")
    print(f"total {time.monotonic() - started:.0f} s on {os.cpu_count()} CPUs, {when}; other load on the machine "
          "shows up in every number.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
