"""Does watching a run slow it? `python bench/console.py [--files N] [--rounds R]`.

The same run (N small images, local folder to local folder, real PostgreSQL) with no observer, with the
terminal display drawing into a terminal-sized buffer at its normal refresh rate, refreshing 20 times a
second, and counting without drawing; the order rotates each round so no case always follows another. Then the
observer calls alone: how many per second one thread can make (each transfer makes a handful).
Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/console.py` from anywhere

import psycopg
from rich.console import Console

from bench.harness import app_database, pg_server_url
from bench.media import noise_jpeg
from filesync import logs, pipeline
from filesync.app import App
from filesync.model import RunSummary
from filesync.observer import Observer
from filesync.progress import ProgressDisplay
from filesync.settings import Environment
from filesync.stats import RunStats


def seed(url: str, src: Path, n: int) -> None:
    src.mkdir(parents=True, exist_ok=True)
    data = noise_jpeg(20 * 1024)
    rows = []
    for i in range(n):
        key = f"p/{i:05d}.jpg"
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
        rows.append((f"f{i:05d}", key))
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO "File" (id, path) VALUES (%s, %s)', rows)


def one_run(server: str, n: int, watch: Callable[[], ProgressDisplay | None]) -> tuple[float, float, int]:
    """Wall seconds of the engine's run (pipeline.run, from inside), this process's CPU seconds during it (every
    thread: transfers, drawing; PostgreSQL is another process), and files copied. On a shared machine the CPU
    time is the steadier figure: other processes stretch the wall time, not our CPU time."""
    with app_database(server) as url, tempfile.TemporaryDirectory() as tmp:
        seed(url, Path(tmp) / "src", n)
        env = Environment({"DATABASE_URL": url, "FILESYNC_SOURCE": "local", "FILESYNC_SOURCE_DIR": f"{tmp}/src",
                           "FILESYNC_ROUTES": "image/*=local", "FILESYNC_LOCAL_DIR": f"{tmp}/out",
                           "FILESYNC_CONCURRENCY": "4", "FILESYNC_LOG_FILE": os.devnull}, env_file=os.devnull)
        logs.configure(env, console=False, console_level="CRITICAL")  # as `filesync run` at a terminal
        with App.build(env) as app:
            app.ledger.migrate()
            display = watch()
            started, cpu = time.perf_counter(), time.process_time()
            if display is None:
                summary = pipeline.run(app)
            else:
                with display:
                    summary = pipeline.run(app, observer=display)
            return time.perf_counter() - started, time.process_time() - cpu, summary.copied


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=120, height=40)


def calls_per_second(observer: Observer, seconds: float = 1.0) -> float:
    """One transfer's worth of calls (start, 8 progress chunks, finish, file finished), as fast as possible."""
    observer.run_started(RunSummary(total_files=1_000_000))
    calls, end, i = 0, time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        fid = f"f{i}"
        observer.transfer_started(fid, f"p/{fid}.jpg", "local", 8192)
        for _ in range(8):
            observer.transfer_progress(fid, "local", 1024)
        observer.transfer_finished(fid, "local", "copied")
        observer.file_finished(fid, "copied")
        calls, i = calls + 11, i + 1
    return calls / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=500, help="images per run (default 500)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each case (default 5)")
    args = p.parse_args()
    server = pg_server_url()
    cases: dict[str, Callable[[], ProgressDisplay | None]] = {
        "no display": lambda: None,
        "display (4/s)": lambda: ProgressDisplay(console=terminal()),
        "display (20/s)": lambda: ProgressDisplay(console=terminal(), refresh_per_second=20),
        "counting only": lambda: ProgressDisplay(console=terminal(), refresh_per_second=0.001),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    cpu_ms: dict[str, list[float]] = {name: [] for name in cases}
    one_run(server, 20, lambda: None)  # warm-up: imports, the server's caches
    names = list(cases)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no case always runs second
            watch = cases[name]
            seconds, cpu, copied = one_run(server, args.files, watch)
            assert copied == args.files, (name, copied)
            results[name].append(args.files / seconds)
            cpu_ms[name].append(cpu / args.files * 1000)
    base = statistics.median(results["no display"])
    print(f"{args.files} images of 20 KiB, local -> local, FILESYNC_CONCURRENCY=4, {args.rounds} rounds")
    cpu_base = statistics.median(cpu_ms["no display"])
    print(f"{'case':<16} {'median files/s':>15} {'runs (files/s)':<36} {'vs none':>8} {'CPU ms/file':>12} "
          f"{'vs none':>8}")
    for name, rates in results.items():
        runs = ", ".join(f"{r:.0f}" for r in rates)
        cpu = statistics.median(cpu_ms[name])
        print(f"{name:<16} {statistics.median(rates):>15.1f} {runs:<36} {statistics.median(rates) / base:>8.2f} "
              f"{cpu:>12.2f} {cpu / cpu_base:>8.2f}")
    print("observer calls per second, one thread (a transfer makes ~11):")
    print(f"  RunStats alone       {calls_per_second(RunStats()):>12,.0f}")
    display = ProgressDisplay(console=terminal(), refresh_per_second=20)
    with display:
        rate = calls_per_second(display)
    print(f"  display, drawing 20/s {rate:>11,.0f}")


if __name__ == "__main__":
    main()
