"""Run the benchmarks and print their numbers: `python bench/run.py [--quick] [--only NAME ...]`.

Numbers are printed, never asserted: they depend on the machine and on what else it is doing.
See bench/README.md for what each benchmark measures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py` from anywhere

from bench import claim, memory, pacing, throughput
from bench.harness import MotoProcess, pg_server_url
from bench.report import Table, markdown, text

NAMES = ("throughput", "memory", "pacing", "claim")


def ints(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.split(",") if x.strip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and short windows (a minute or two)")
    p.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="benchmarks to run")
    p.add_argument("--markdown", action="store_true", help="print the final tables as Markdown")
    g = p.add_argument_group("1. throughput")
    g.add_argument("--images", type=int, help="small images to copy (default 500; quick 100)")
    g.add_argument("--image-kb", type=int, default=50, help="approximate size of each image (default 50)")
    g.add_argument("--concurrency", type=ints, help="FILESYNC_CONCURRENCY values (default 1,4,8; quick 1,8)")
    g = p.add_argument_group("2. memory")
    g.add_argument("--video-mib", type=ints, help="video sizes in MiB (default 128,512; quick 32,128)")
    g.add_argument("--large", action="store_true", help="also a 2048 MiB video")
    g.add_argument("--chunk-mib", type=ints, help="tus chunk sizes in MiB (default 50,5; quick 50)")
    g = p.add_argument_group("3. pacing")
    g.add_argument("--rps", type=float, default=4.0, help="FILESYNC_CLOUDFLARE_RPS (default 4)")
    g.add_argument("--pacing-concurrency", type=int, default=8, help="transfers at once (default 8)")
    g.add_argument("--pacing-seconds", type=float, help="measured window (default 30; quick 10)")
    g = p.add_argument_group("4. claim")
    g.add_argument("--ledger-rows", type=int, help="rows in filesync.files (default 100000; quick 20000)")
    g.add_argument("--claims", type=int, help="claims timed per case (default 200; quick 50)")
    g.add_argument("--claim-batch", type=int, default=8, help="files per claim (default 8)")
    return p.parse_args(argv)


def pick(value: object, quick: bool, full: object, short: object) -> object:
    if value is not None:
        return value
    return short if quick else full


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    q = args.quick
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"filesync bench on {os.cpu_count()} CPUs{' (quick)' if q else ''}: {', '.join(args.only)}", flush=True)
    started = time.monotonic()
    pg = pg_server_url()
    tables: list[Table] = []
    with MotoProcess() as moto:
        if "throughput" in args.only:
            tables.append(throughput.run(pg, moto, throughput.Options(
                count=pick(args.images, q, 500, 100),  # type: ignore[arg-type]
                image_bytes=args.image_kb * 1000,
                concurrencies=pick(args.concurrency, q, (1, 4, 8), (1, 8)),  # type: ignore[arg-type]
            )))
        if "memory" in args.only:
            sizes: tuple[int, ...] = pick(args.video_mib, q, (128, 512), (32, 128))  # type: ignore[assignment]
            if args.large:
                sizes = (*sizes, 2048)
            tables.append(memory.run(pg, moto, memory.Options(
                sizes_mib=sizes, chunks_mib=pick(args.chunk_mib, q, (50, 5), (50,)),  # type: ignore[arg-type]
            )))
        if "pacing" in args.only:
            seconds: float = pick(args.pacing_seconds, q, 30.0, 10.0)  # type: ignore[assignment]
            tables.append(pacing.run(pg, moto, pacing.Options(
                rps=args.rps, concurrency=args.pacing_concurrency, seconds=seconds,
                images=int(seconds * args.rps * 2) + 40,
            )))
    if "claim" in args.only:
        tables.append(claim.run(pg, claim.Options(
            rows=pick(args.ledger_rows, q, 100_000, 20_000),  # type: ignore[arg-type]
            claims=pick(args.claims, q, 200, 50),  # type: ignore[arg-type]
            batch=args.claim_batch,
        )))
    print()
    for table in tables:
        print(markdown(table) if args.markdown else text(table), end="\n\n")
    print(f"total {time.monotonic() - started:.0f} s on {os.cpu_count()} CPUs; other load on the machine "
          "shows up in every number.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
