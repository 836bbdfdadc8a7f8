"""The account limit: images per hour with and without the Images batch API.

The fake Cloudflare enforces Cloudflare's global limit (1,200 requests per 5 minutes, then every account
call blocked), scaled down in time with the same rate (`AccountLimit().scaled(k)`: 1200/k requests per
300/k seconds), so a block would show within the window. filesync runs with its defaults
(FILESYNC_CLOUDFLARE_RPS=3.5) for a fixed window, once with the batch API off, once on; the fake counts
the images stored in the window and every 429 its account limiter answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.harness import Bucket, FilesyncProcess, TimedCloudflare, add_rows, app_database, run_env
from bench.report import Table, emit, ratio
from bench.throughput import Baselines
from filesync.testing.fakes.cloudflare import AccountLimit


@dataclass(frozen=True)
class Options:
    seconds: float = 30.0
    concurrency: int = 8
    latency_ms: int = 80
    scale: float = 30.0  # 40 requests per 10 s, blocked 10 s


def run(pg_url: str, bucket: Bucket, keys: list[str], refs: Baselines, opts: Options) -> Table:
    limit = AccountLimit().scaled(opts.scale)
    table = Table(f"Account limit: {limit.requests} account calls per {limit.window:g} s (Cloudflare's 1200 per "
                  f"300 s, {opts.scale:g}x shorter), concurrency {opts.concurrency}, {opts.latency_ms} ms",
                  ["batch API", "images", "window s", "images/s", "images/hour", "account calls", "account 429s",
                   "x raw", "x sequential"])
    raw = refs.raw.get((opts.latency_ms, opts.concurrency), (0.0, 0.0))[1]
    seq = refs.sequential.get(opts.latency_ms, (0.0, 0.0))[1]
    for batch in (False, True):
        with app_database(pg_url) as db, TimedCloudflare(account_limit=limit, latency=opts.latency_ms / 1000) as cf:
            add_rows(db, [(f"a{n:06d}", key) for n, key in enumerate(keys)])
            env = run_env(db, bucket, cf, FILESYNC_CONCURRENCY=str(opts.concurrency),
                          FILESYNC_ROUTES="image/*=cloudflare-images",
                          FILESYNC_CLOUDFLARE_IMAGES_BATCH="true" if batch else "false")
            proc = FilesyncProcess(env).start()
            try:
                while not cf.stored_at():
                    if not proc.running():
                        raise RuntimeError("filesync exited before storing an image")
                    time.sleep(0.05)
                first = cf.stored_at()[0]
                while time.monotonic() < first + opts.seconds and proc.running():
                    time.sleep(0.1)
            finally:
                proc.terminate()  # claim nothing more; in-flight transfers finish
                proc.wait(timeout=300)
            stored = [t - first for t in cf.stored_at() if t - first < opts.seconds]
            window = min(opts.seconds, max(stored[-1], 1e-3)) if len(stored) == len(keys) else opts.seconds
            calls = sum(1 for _t, r in cf.arrivals if r.path.startswith("/client/v4/") and _t - first < window)
            limited = cf.account_limited
        rate = len(stored) / window
        emit("account-limit", batch_api=batch, images=len(stored), window_s=round(window, 1),
             images_per_s=round(rate, 2), images_per_hour=round(rate * 3600), account_calls=calls,
             account_429=limited, limit=f"{limit.requests}/{limit.window:g}s", ratio_raw=ratio(rate, raw),
             ratio_sequential=ratio(rate, seq))
        table.add("on" if batch else "off", len(stored), f"{window:.1f}", f"{rate:.1f}", f"{rate * 3600:,.0f}",
                  calls, limited, ratio(rate, raw), ratio(rate, seq))
    table.notes.append("images/hour: the rate in the window x 3600; without the batch API every image is an "
                       "account call, paced at FILESYNC_CLOUDFLARE_RPS=3.5 (12,600 an hour at most).")
    table.notes.append("x raw, x sequential: images/s over the unlimited baselines' files/s at the same concurrency "
                       "and latency (small-images table).")
    return table
