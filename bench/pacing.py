"""Benchmark 3: the shared Cloudflare pacer under load.

FILESYNC_CLOUDFLARE_RPS=4 and 8 transfers at once, with more images than can be sent in the window;
the fake notes when each request arrives. Cloudflare blocks an account for 5 minutes past 1200 requests
in 5 minutes (4/s), so the pacer must hold the rate, not just the average, under concurrency.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from dataclasses import dataclass

from bench.harness import FilesyncProcess, MotoProcess, TimedCloudflare, add_rows, app_database, run_env
from bench.media import put_images
from bench.report import Table


@dataclass(frozen=True)
class Options:
    rps: float = 4.0
    concurrency: int = 8
    seconds: float = 30.0
    images: int = 400
    image_bytes: int = 20_000


def max_in_window(times: list[float], width: float) -> int:
    """Most arrivals in any window of `width` seconds that starts at an arrival."""
    return max((bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def run(pg_url: str, moto: MotoProcess, opts: Options) -> Table:
    table = Table(f"3. Pacing: FILESYNC_CLOUDFLARE_RPS={opts.rps:g}, {opts.concurrency} transfers at once",
                  ["window s", "requests", "req/s", "max in 1 s", "max in 5 s", "min gap ms", "per 5 min",
                   "pacer limit /5 min"])
    bucket = moto.bucket()
    keys, _ = put_images(bucket, opts.images, opts.image_bytes)
    with app_database(pg_url) as db, TimedCloudflare() as cf:
        add_rows(db, [(f"p{n:06d}", key) for n, key in enumerate(keys)])
        env = run_env(db, bucket, cf, FILESYNC_CLOUDFLARE_RPS=str(opts.rps),
                      FILESYNC_CONCURRENCY=str(opts.concurrency))
        proc = FilesyncProcess(env).start()
        try:
            while not cf.arrivals:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise RuntimeError("filesync exited before sending a request")
                time.sleep(0.05)
            first = cf.arrivals[0][0]
            time.sleep(max(0.0, first + opts.seconds - time.monotonic()))
        finally:
            proc.terminate()  # first SIGTERM: claim nothing more, let in-flight transfers finish
            proc.wait(timeout=120)
        times = [t - first for t, _m, _p in cf.arrivals if t - first < opts.seconds]
        methods: dict[str, int] = {}
        for t, method, _p in cf.arrivals:
            if t - first < opts.seconds:
                methods[method] = methods.get(method, 0) + 1
    rate = len(times) / opts.seconds
    min_gap = min((b - a for a, b in itertools.pairwise(times)), default=0.0)
    table.add(f"{opts.seconds:g}", len(times), f"{rate:.2f}", max_in_window(times, 1.0), max_in_window(times, 5.0),
              f"{min_gap * 1000:.0f}", f"{rate * 300:.0f}", f"{opts.rps * 300 + 1:.0f}")
    table.notes.append("requests by method in the window: " + ", ".join(f"{m} {n}" for m, n in sorted(methods.items())))
    table.notes.append("per 5 min: the measured rate x 300 s; Cloudflare's limit is 1200 per 5 min.")
    return table
