"""An idle daemon: the CPU `filesync daemon` uses between runs.

The daemon starts with its HTTP server on (as in the container), runs once at start on a table with
nothing to copy, then waits for a schedule that does not come within the window. Its CPU time (user and
system, from /proc/<pid>/stat) is read after the first run has ended and again at the end of the window:
what it spends waiting. The goal is none that can be measured: a wait on the scheduler's event, no polling.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import psycopg

from bench.harness import FilesyncProcess, S3Process, TimedCloudflare, app_database, run_env
from bench.report import Table, emit


@dataclass(frozen=True)
class Options:
    seconds: float = 60.0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first_run_ended(url: str) -> bool:
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM filesync.runs WHERE finished_at IS NOT NULL").fetchone()
    except psycopg.Error:  # not migrated yet
        return False
    return bool(row and row[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(pg_url: str, s3: S3Process, opts: Options) -> Table:
    table = Table("Idle daemon: CPU between runs", ["window s", "CPU s", "CPU % of one core", "peak RSS MiB"])
    bucket = s3.bucket()
    with app_database(pg_url) as db, TimedCloudflare() as cf:
        env = run_env(db, bucket, cf, FILESYNC_SCHEDULE="0 0 1 1 *", FILESYNC_RUN_ON_START="true",
                      FILESYNC_HTTP_PORT=str(_free_port()))
        proc = FilesyncProcess(env, "daemon").start()
        assert proc.proc is not None
        try:
            deadline = time.monotonic() + 60
            while not _first_run_ended(db):
                if time.monotonic() > deadline or not proc.running():
                    raise RuntimeError("the daemon's first run did not end within 60 s")
                time.sleep(0.2)
            time.sleep(1.0)  # the end of the first run (its summary, the log) is not idle time
            before = _cpu_seconds(proc.proc.pid)
            time.sleep(opts.seconds)
            spent = _cpu_seconds(proc.proc.pid) - before
        finally:
            proc.terminate()
            result = proc.wait(60)
    emit("idle-daemon", window_s=opts.seconds, cpu_s=round(spent, 3),
         cpu_percent=round(100 * spent / opts.seconds, 3), peak_rss_mib=result.peak_rss_bytes // 2**20)
    table.add(f"{opts.seconds:g}", f"{spent:.2f}", f"{100 * spent / opts.seconds:.2f}",
              result.peak_rss_bytes // 2**20)
    table.notes.append("FILESYNC_SCHEDULE never due in the window; FILESYNC_RUN_ON_START=true on an empty table; "
                       f"CPU: utime + stime from /proc, in ticks of 1/{os.sysconf('SC_CLK_TCK')} s.")
    return table
