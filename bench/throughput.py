"""Throughput: many small images to Cloudflare Images (through the batch API), and videos to Stream (tus).

Each case runs `filesync run` as a child process against a fresh database and a fresh fake Cloudflare with
an added latency per call (0 ms: this machine; 80 ms: a distant API). Rates come from filesync's own run
record (`filesync.runs`), so interpreter start-up and migrations are left out. Beside each, the baselines
(bench/baselines.py) at the same concurrency and latency: the raw loop (the limit) and the sequential
design; the ratios are filesync's MB/s over theirs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    Bucket,
    MeasuredProcess,
    MiB,
    S3Process,
    TimedCloudflare,
    add_rows,
    app_database,
    last_run,
    run_env,
    run_filesync,
)
from bench.media import put_images, put_video
from bench.report import Table, emit, mb, ratio


@dataclass(frozen=True)
class ImageOptions:
    count: int = 1000
    image_bytes: int = 200_000
    concurrencies: tuple[int, ...] = (1, 4, 8, 16)
    latencies_ms: tuple[int, ...] = (0, 80)


@dataclass(frozen=True)
class VideoOptions:
    count: int = 20
    video_bytes: int = 50_000_000
    concurrency: int = 4
    latencies_ms: tuple[int, ...] = (0, 80)
    chunk_bytes: int = 50 * MiB


@dataclass
class Baselines:
    """Measured reference rates (MB/s, files/s) by (latency, concurrency); sequential by latency."""

    raw: dict[tuple[int, int], tuple[float, float]]
    sequential: dict[int, tuple[float, float]]


def baseline(mode: str, target: str, bucket: Bucket, keys: list[str], cf: TimedCloudflare,
             concurrency: int = 1, **extra: Any) -> dict[str, Any]:
    """One run of bench/baselines.py in a child process: its files, bytes, seconds and peak RSS."""
    spec = {"mode": mode, "target": target, "endpoint": bucket.endpoint, "bucket": bucket.name, "keys": keys,
            "concurrency": concurrency, "api_base": cf.api_base, "batch_base": cf.batch_base,
            "account_id": cf.account_id, "token": cf.token, **extra}
    proc = MeasuredProcess([sys.executable, "-m", "bench.baselines", json.dumps(spec)])
    result = proc.start().wait()
    out: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    out["peak_rss"] = result.peak_rss_bytes
    out["mb_s"] = out["bytes"] / out["seconds"] / 1e6
    out["files_s"] = out["files"] / out["seconds"]
    return out


def images(pg_url: str, s3: S3Process, opts: ImageOptions) -> tuple[Table, Baselines, Bucket, list[str]]:
    table = Table(f"Small images: {opts.count} JPEGs of ~{opts.image_bytes // 1000} KB, S3 -> Cloudflare Images "
                  "(batch API)",
                  ["latency ms", "concurrency", "copied", "files/s", "MB/s", "raw MB/s", "x raw",
                   "sequential MB/s", "x sequential", "peak RSS MiB"])
    bucket = s3.bucket()
    keys, total = put_images(bucket, opts.count, opts.image_bytes)
    rows = [(f"f{n:06d}", key) for n, key in enumerate(keys)]
    refs = Baselines({}, {})
    for latency in opts.latencies_ms:
        with TimedCloudflare(latency=latency / 1000) as cf:
            seq = baseline("sequential", "images", bucket, keys, cf)
        refs.sequential[latency] = (seq["mb_s"], seq["files_s"])
        for concurrency in opts.concurrencies:
            with TimedCloudflare(latency=latency / 1000) as cf:
                raw = baseline("raw", "images", bucket, keys, cf, concurrency)
            refs.raw[(latency, concurrency)] = (raw["mb_s"], raw["files_s"])
            with app_database(pg_url) as db, TimedCloudflare(latency=latency / 1000) as cf:
                add_rows(db, rows)
                env = run_env(db, bucket, cf, FILESYNC_CONCURRENCY=str(concurrency),
                              FILESYNC_ROUTES="image/*=cloudflare-images")
                proc = run_filesync(env)
                record = last_run(db)
                answered_429 = sum(1 for r in cf.requests if r.status == 429)
            seconds = record["seconds"] or proc.wall_seconds
            mb_s, files_s = record["bytes"] / seconds / 1e6, record["copied"] / seconds
            emit("small-images", latency_ms=latency, concurrency=concurrency, files=opts.count,
                 copied=record["copied"], bytes=record["bytes"], seconds=round(seconds, 3),
                 files_per_s=round(files_s, 2), mb_per_s=round(mb_s, 3), raw_mb_per_s=round(raw["mb_s"], 3),
                 ratio_raw=ratio(mb_s, raw["mb_s"]), sequential_mb_per_s=round(seq["mb_s"], 3),
                 ratio_sequential=ratio(mb_s, seq["mb_s"]), peak_rss_mib=round(proc.peak_rss_bytes / MiB),
                 responses_429=answered_429)
            table.add(latency, concurrency, record["copied"], f"{files_s:.1f}", f"{mb_s:.2f}", f"{raw['mb_s']:.2f}",
                      ratio(mb_s, raw["mb_s"]), f"{seq['mb_s']:.2f}", ratio(mb_s, seq["mb_s"]),
                      f"{proc.peak_rss_bytes / MiB:.0f}")
    table.notes.append(f"{opts.count} distinct JPEGs, {mb(total)} MB in all; filesync with its defaults "
                       "(FILESYNC_CLOUDFLARE_RPS=3.5, the batch API on); latency added to every Cloudflare call.")
    table.notes.append("raw: download + upload only, same concurrency and host, no database; sequential: one "
                       "file at a time, read whole, then uploaded (its MB/s is at concurrency 1).")
    return table, refs, bucket, keys


def videos(pg_url: str, s3: S3Process, opts: VideoOptions) -> Table:
    table = Table(f"Videos: {opts.count} of {opts.video_bytes / 1e6:.0f} MB, S3 -> Cloudflare Stream (tus), "
                  f"concurrency {opts.concurrency}",
                  ["latency ms", "copied", "MB/s", "raw MB/s", "x raw", "sequential MB/s", "x sequential",
                   "peak RSS MiB", "raw RSS MiB", "sequential RSS MiB"])
    bucket = s3.bucket()
    keys = [f"videos/{n:03d}.mp4" for n in range(opts.count)]
    for key in keys:
        put_video(bucket, key, opts.video_bytes)
    rows = [(f"v{n:03d}", key) for n, key in enumerate(keys)]
    chunk = {"chunk": opts.chunk_bytes}
    for latency in opts.latencies_ms:
        with TimedCloudflare(latency=latency / 1000) as cf:
            raw = baseline("raw", "stream", bucket, keys, cf, opts.concurrency, **chunk)
        with TimedCloudflare(latency=latency / 1000) as cf:
            seq = baseline("sequential", "stream", bucket, keys, cf, **chunk)
        with app_database(pg_url) as db, TimedCloudflare(latency=latency / 1000) as cf:
            add_rows(db, rows)
            # Stream calls go to the account API: paced at 3.5/s they would measure the pacer (the account
            # limit scenario does that); here the pacing is out of the way, as it is for the baselines.
            env = run_env(db, bucket, cf, FILESYNC_CONCURRENCY=str(opts.concurrency), FILESYNC_CLOUDFLARE_RPS="1000",
                          FILESYNC_TUS_CHUNK_BYTES=str(opts.chunk_bytes), FILESYNC_ROUTES="video/*=cloudflare-stream")
            proc = run_filesync(env)
            record = last_run(db)
            if cf.patch_bytes_total < opts.count * opts.video_bytes:
                raise RuntimeError(f"videos did not arrive whole: {record}")
        seconds = record["seconds"] or proc.wall_seconds
        mb_s = record["bytes"] / seconds / 1e6
        emit("videos", latency_ms=latency, concurrency=opts.concurrency, files=opts.count, copied=record["copied"],
             bytes=record["bytes"], seconds=round(seconds, 3), mb_per_s=round(mb_s, 2),
             raw_mb_per_s=round(raw["mb_s"], 2), ratio_raw=ratio(mb_s, raw["mb_s"]),
             sequential_mb_per_s=round(seq["mb_s"], 2), ratio_sequential=ratio(mb_s, seq["mb_s"]),
             peak_rss_mib=round(proc.peak_rss_bytes / MiB), raw_rss_mib=round(raw["peak_rss"] / MiB),
             sequential_rss_mib=round(seq["peak_rss"] / MiB))
        table.add(latency, record["copied"], f"{mb_s:.1f}", f"{raw['mb_s']:.1f}", ratio(mb_s, raw["mb_s"]),
                  f"{seq['mb_s']:.1f}", ratio(mb_s, seq["mb_s"]), f"{proc.peak_rss_bytes / MiB:.0f}",
                  f"{raw['peak_rss'] / MiB:.0f}", f"{seq['peak_rss'] / MiB:.0f}")
    table.notes.append(f"tus chunks of {opts.chunk_bytes // MiB} MiB; FILESYNC_CLOUDFLARE_RPS=1000 (Stream uses the "
                       "account API; see the account-limit table for the pacer).")
    return table
