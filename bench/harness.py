"""What every benchmark needs: PostgreSQL, an S3 server (moto behind waitress, its own process), the fake
Cloudflare, and `filesync run` (or a baseline) as a measured subprocess (wall time, peak RSS).

The S3 server runs as a separate process, not a thread of the bench: with the fake Cloudflare in the
bench process as well, one interpreter's GIL would otherwise serve both ends of every transfer. filesync
and the baselines run as child processes for the same reason, each with a GIL of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg

from filesync.testing.fakes.base import LoggedRequest, free_port
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.postgres import APP_TABLE_DDL, embedded_server_url, fresh_database

MiB = 1024 * 1024
TOKEN = "bench-cf-token-not-a-secret"
REGION = "nyc3"
ROOT = Path(__file__).resolve().parent.parent


def pg_server_url() -> str:
    """TEST_DATABASE_URL if set, else an embedded pgserver of the bench's own (shared across bench runs)."""
    root = Path(os.environ.get("FILESYNC_BENCH_PGROOT") or Path(tempfile.gettempdir()) / "filesync-bench-pg")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))  # pgserver's platformdirs wants a private runtime dir
    return os.environ.get("TEST_DATABASE_URL") or embedded_server_url(root / "pgdata")


@contextlib.contextmanager
def app_database(server_url: str) -> Iterator[str]:
    """A fresh database holding the app's "File" table."""
    with fresh_database(server_url, prefix="fs_bench") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(APP_TABLE_DDL)
        yield url


def add_rows(url: str, rows: list[tuple[str, str]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates") VALUES (%s, %s, %s, %s)',
                        [(i, p, "2024-06-21T18:30:00+00:00", "48.8584,2.2945") for i, p in rows])


def last_run(url: str) -> dict[str, Any]:
    """filesync's own record of its latest run: the run's duration excludes interpreter start and migrations."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, copied, skipped, failed, bytes, "
                           "extract(epoch FROM finished_at - started_at) FROM filesync.runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        raise RuntimeError("filesync recorded no run")
    keys = ("status", "copied", "skipped", "failed", "bytes", "seconds")
    return dict(zip(keys, (*row[:5], float(row[5] or 0.0)), strict=True))


class S3Process:
    """moto behind waitress (bench/s3server.py) on a free port, in its own process; keeps connections alive."""

    def __init__(self, latency_ms: float = 0.0, threads: int = 32) -> None:
        self.port = free_port()
        self.latency_ms = latency_ms
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> S3Process:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.s3server", "--port", str(self.port), "--threads", str(self.threads),
             "--latency-ms", str(self.latency_ms)],
            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the S3 server (moto behind waitress) did not start")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def bucket(self, name: str | None = None) -> Bucket:
        bucket = Bucket(self.endpoint, name or f"bench-{uuid.uuid4().hex[:10]}")
        bucket.client().create_bucket(Bucket=bucket.name,
                                      CreateBucketConfiguration={"LocationConstraint": REGION})
        return bucket


@dataclass
class Bucket:
    endpoint: str
    name: str

    def client(self, pool: int = 10) -> Any:
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="bench-key", aws_secret_access_key="bench-secret",
                            config=Config(max_pool_connections=pool))

    def env(self) -> dict[str, str]:
        return {"FILESYNC_SOURCE": "s3", "SPACES_ENDPOINT": self.endpoint, "SPACES_KEY": "bench-key",
                "SPACES_SECRET": "bench-secret", "SPACES_BUCKET": self.name, "SPACES_REGION": REGION}


class TimedCloudflare(FakeCloudflare):
    """The fake Cloudflare, noting when each request arrived and when each image was stored."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(token=TOKEN, **kw)
        self.arrivals: list[tuple[float, LoggedRequest]] = []

    def __enter__(self) -> TimedCloudflare:
        self.start()
        return self

    def log_request(self, entry: LoggedRequest) -> None:
        super().log_request(entry)
        with self._lock:
            self.arrivals.append((time.monotonic(), entry))

    def stored_at(self) -> list[float]:
        """When each image upload that was answered 200 arrived (monotonic), in order."""
        with self._lock:
            return [t for t, r in self.arrivals if r.method == "POST" and r.path.endswith("/images/v1")
                    and r.status == 200]


def run_env(database_url: str, bucket: Bucket, cf: FakeCloudflare, **extra: str) -> dict[str, str]:
    """filesync's settings for one case: the real defaults (FILESYNC_CLOUDFLARE_RPS 3.5, the batch API on)
    unless the case says otherwise."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        **bucket.env(),
        "CLOUDFLARE_ACCOUNT_ID": cf.account_id,
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_API_BASE": cf.api_base,
        "CLOUDFLARE_IMAGES_BATCH_BASE": cf.batch_base,
        "FILESYNC_LOG_FILE": os.devnull,
        "FILESYNC_LOG_LEVEL": "WARNING",
        "FILESYNC_WORKER_ID": "bench",
    }
    env.update(extra)
    return env


def db_active_ms(url: str) -> float:
    """Milliseconds the server spent executing statements in this database so far (all sessions;
    pg_stat_database.active_time, PostgreSQL 14+). The difference across a run is its database time."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT active_time FROM pg_stat_database WHERE datname = current_database()")\
            .fetchone()
        conn.execute("SELECT pg_stat_clear_snapshot()")
    return float(row[0] or 0.0) if row else 0.0


@dataclass
class ProcessResult:
    returncode: int
    wall_seconds: float
    peak_rss_bytes: int  # the process's VmHWM (kernel high-water mark), last read from /proc before it exited
    ru_maxrss_bytes: int  # from wait4: also counts children it forked and reaped (botocore runs `uname -p`)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, VmRSS bytes)


def _status_kib(pid: int, names: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in names:
                out[key] = int(value.split()[0])
    return out


class MeasuredProcess:
    """A child process (filesync, a baseline) with its VmHWM read from /proc every 5 ms until it exits.

    VmHWM only grows, so the last reading is the peak but for the final few milliseconds. wait4's
    ru_maxrss is kept beside it, but it is not this process's alone: it is the largest of the process and
    the children it reaped, and botocore forks `uname -p` (a copy of the whole process) while it runs.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> None:
        self.argv = argv
        self.env = env
        self.ok = ok  # exit codes that are results, not failures of the bench
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.stdout = b""
        self._samples: list[tuple[float, int]] = []
        self._hwm = 0
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> MeasuredProcess:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=str(ROOT), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        assert self.proc is not None
        while not self._done.is_set():
            try:
                kib = _status_kib(self.proc.pid, ("VmRSS", "VmHWM"))
            except (OSError, ValueError):
                return
            if "VmHWM" not in kib:  # exiting: its memory is already gone
                return
            self._hwm = max(self._hwm, kib.get("VmHWM", 0) * 1024)
            self._samples.append((time.monotonic() - self.started, kib.get("VmRSS", 0) * 1024))
            self._done.wait(0.005)

    def terminate(self) -> None:
        """SIGTERM, unless it has exited (Popen.terminate would reap it, and `wait` needs its rusage)."""
        if self.proc is not None and self.running():
            os.kill(self.proc.pid, signal.SIGTERM)

    def running(self) -> bool:
        """Still running (without reaping it: `wait` does that, for its rusage)."""
        if self.proc is None:
            return False
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False

    def wait(self, timeout: float = 3600) -> ProcessResult:
        assert self.proc is not None and self.proc.stderr is not None and self.proc.stdout is not None
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [threading.Thread(target=lambda: out.append(self.proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
                   threading.Thread(target=lambda: err.append(self.proc.stderr.read()), daemon=True)]  # type: ignore[union-attr]
        for reader in readers:
            reader.start()
        killer = threading.Timer(timeout, self.proc.kill)
        killer.start()
        try:
            _pid, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._done.set()
        for reader in readers:
            reader.join(timeout=5)
        self.stdout = b"".join(out)
        if self.proc.returncode not in self.ok:
            raise RuntimeError(f"{' '.join(self.argv[:4])} exited {self.proc.returncode}: "
                               f"{b''.join(err).decode()[-2000:]}")
        return ProcessResult(self.proc.returncode, wall, self._hwm, usage.ru_maxrss * 1024, list(self._samples))


class FilesyncProcess(MeasuredProcess):
    """`python -m filesync run -q` (or other arguments) as a measured child."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        # 1: the run ended with failed files (counted in its record); 130: stopped by the bench's SIGTERM
        super().__init__([sys.executable, "-m", "filesync", *(args or ("run", "-q"))], env, ok=(0, 1, 130))


def run_filesync(env: dict[str, str], *args: str, timeout: float = 3600) -> ProcessResult:
    return FilesyncProcess(env, *args).start().wait(timeout)
