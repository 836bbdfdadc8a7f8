"""Benchmark 2: one large video, S3 (moto) -> Cloudflare Stream (fake, tus), peak RSS vs file size.

`filesync run` is a child process; its peak resident set is the kernel's high-water mark (VmHWM), read
from /proc every 5 ms. If streaming is bounded, the peak does not follow the file size (and at most the
tus chunk size). A 1 MiB video gives the floor: interpreter, libraries, pools.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import MiB, MotoProcess, TimedCloudflare, add_rows, app_database, last_run, run_env, run_filesync
from bench.media import put_video
from bench.report import Table


@dataclass(frozen=True)
class Options:
    sizes_mib: tuple[int, ...] = (128, 512)
    chunks_mib: tuple[int, ...] = (50, 5)
    floor_mib: int = 1


def run(pg_url: str, moto: MotoProcess, opts: Options) -> Table:
    table = Table("2. Memory: one video, S3 -> Cloudflare Stream over tus",
                  ["video MiB", "chunk MiB", "peak RSS MiB", "over floor MiB", "ru_maxrss MiB", "run s", "MB/s"])
    bucket = moto.bucket()
    floor = 0
    cases = [(opts.floor_mib, opts.chunks_mib[0])] if opts.floor_mib else []
    cases += [(size, chunk) for chunk in opts.chunks_mib for size in opts.sizes_mib]
    made: set[int] = set()
    for size_mib, chunk_mib in cases:
        key = f"videos/{size_mib}.mp4"
        if size_mib not in made:
            print(f"  putting a {size_mib} MiB video into S3 (multipart) ...", flush=True)
            put_video(bucket, key, size_mib * MiB)
            made.add(size_mib)
        with app_database(pg_url) as db, TimedCloudflare() as cf:
            add_rows(db, [(f"v{size_mib}", key)])
            env = run_env(db, bucket, cf, FILESYNC_TUS_CHUNK_BYTES=str(chunk_mib * MiB), FILESYNC_CONCURRENCY="1")
            proc = run_filesync(env)
            record = last_run(db)
            arrived = cf.stored_videos()
            if record["copied"] != 1 or cf.patch_bytes_total != size_mib * MiB or arrived[0].size != size_mib * MiB:
                raise RuntimeError(f"the {size_mib} MiB video did not arrive whole: {record}")
        rss = proc.peak_rss_bytes
        if size_mib == opts.floor_mib and not floor:
            floor = rss
        seconds = record["seconds"] or proc.wall_seconds
        table.add(size_mib, chunk_mib, f"{rss / MiB:.0f}", f"{round((rss - floor) / MiB):+d}" if floor else "-",
                  f"{proc.ru_maxrss_bytes / MiB:.0f}", f"{seconds:.1f}",
                  f"{size_mib * MiB / seconds / 1e6:.1f}")
    table.notes.append("peak RSS: VmHWM of the `filesync run` process. ru_maxrss (wait4) also counts the "
                       "`uname -p` child botocore forks, so it reads higher.")
    table.notes.append(f"floor: the same run with a {opts.floor_mib} MiB video. FILESYNC_CONCURRENCY=1.")
    return table
