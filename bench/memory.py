"""Peak memory: one large video through Cloudflare Stream (tus) and through the S3 sink.

`filesync run` is a child process; its peak resident set is the kernel's high-water mark (VmHWM), read
from /proc every 5 ms. If streaming is bounded, the peak does not follow the file size. The baselines run
the largest file: the raw loop streams (one tus chunk or S3 part at a time), the sequential design reads
the whole file into memory first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.harness import MiB, S3Process, TimedCloudflare, add_rows, app_database, last_run, run_env, run_filesync
from bench.media import put_video
from bench.report import Table, emit, ratio
from bench.throughput import baseline


@dataclass(frozen=True)
class Options:
    sizes_mib: tuple[int, ...] = (256, 2048)
    chunk_bytes: int = 50 * MiB


def run(pg_url: str, s3: S3Process, opts: Options) -> Table:
    table = Table("Memory: one video, S3 -> Stream (tus) and S3 -> S3 (the s3 sink)",
                  ["sink", "video MiB", "peak RSS MiB", "MB/s", "raw MB/s", "x raw", "raw RSS MiB",
                   "sequential MB/s", "x sequential", "sequential RSS MiB"])
    bucket = s3.bucket()
    largest = max(opts.sizes_mib)
    for size_mib in opts.sizes_mib:
        key = f"videos/{size_mib}.mp4"
        print(f"  putting a {size_mib} MiB video into S3 (multipart) ...", flush=True)
        put_video(bucket, key, size_mib * MiB)
        for sink in ("cloudflare-stream", "s3"):
            raw = seq = None
            dest = s3.bucket()
            with TimedCloudflare() as cf:
                if size_mib == largest:
                    target = "stream" if sink == "cloudflare-stream" else "s3"
                    extra: dict[str, Any] = {"chunk": opts.chunk_bytes, "dest_bucket": dest.name}
                    raw = baseline("raw", target, bucket, [key], cf, **extra)
                    dest = s3.bucket()
                    seq = baseline("sequential", target, bucket, [key], cf, **{**extra, "dest_bucket": dest.name})
                    dest = s3.bucket()
            with app_database(pg_url) as db, TimedCloudflare() as cf:
                add_rows(db, [(f"v{size_mib}", key)])
                env = run_env(db, bucket, cf, FILESYNC_CONCURRENCY="1", FILESYNC_CLOUDFLARE_RPS="1000",
                              FILESYNC_TUS_CHUNK_BYTES=str(opts.chunk_bytes), FILESYNC_ROUTES=f"video/*={sink}",
                              FILESYNC_S3_BUCKET=dest.name, FILESYNC_S3_ENDPOINT=bucket.endpoint,
                              FILESYNC_S3_REGION="nyc3", FILESYNC_S3_KEY="bench-key", FILESYNC_S3_SECRET="bench-secret")
                proc = run_filesync(env)
                record = last_run(db)
            if record["copied"] != 1 or record["bytes"] != size_mib * MiB:
                raise RuntimeError(f"the {size_mib} MiB video did not arrive whole through {sink}: {record}")
            seconds = record["seconds"] or proc.wall_seconds
            mb_s = size_mib * MiB / seconds / 1e6
            raw_mb = round(raw["mb_s"], 1) if raw else None
            seq_mb = round(seq["mb_s"], 1) if seq else None
            emit("memory", sink=sink, video_mib=size_mib, peak_rss_mib=round(proc.peak_rss_bytes / MiB),
                 seconds=round(seconds, 2), mb_per_s=round(mb_s, 1), raw_mb_per_s=raw_mb, ratio_raw=ratio(mb_s, raw_mb),
                 raw_rss_mib=round(raw["peak_rss"] / MiB) if raw else None, sequential_mb_per_s=seq_mb,
                 ratio_sequential=ratio(mb_s, seq_mb), sequential_rss_mib=round(seq["peak_rss"] / MiB) if seq else None)
            table.add(sink, size_mib, f"{proc.peak_rss_bytes / MiB:.0f}", f"{mb_s:.0f}",
                      f"{raw_mb:.0f}" if raw_mb else "-", ratio(mb_s, raw_mb),
                      f"{raw['peak_rss'] / MiB:.0f}" if raw else "-", f"{seq_mb:.0f}" if seq_mb else "-",
                      ratio(mb_s, seq_mb), f"{seq['peak_rss'] / MiB:.0f}" if seq else "-")
    table.notes.append(f"FILESYNC_CONCURRENCY=1; tus chunks of {opts.chunk_bytes // MiB} MiB; the s3 sink writes "
                       "8 MiB parts to another bucket of the same S3 server. Baselines on the largest video only.")
    table.notes.append("peak RSS: VmHWM of the process (filesync run, or the baseline), read from /proc.")
    return table
