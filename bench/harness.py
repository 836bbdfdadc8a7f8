"""What every benchmark needs: PostgreSQL, an S3 server (moto, its own process), the fake Cloudflare,
and `filesync run` as a measured subprocess (wall time, peak RSS).

moto runs as a separate process (`moto_server`), not a thread of the bench: with the fake Cloudflare in
the bench process as well, one interpreter's GIL would otherwise serve both ends of every transfer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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

from filesync.testing.fakes.base import free_port
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.postgres import APP_TABLE_DDL, embedded_server_url, fresh_database

MiB = 1024 * 1024
TOKEN = "bench-cf-token-not-a-secret"
REGION = "nyc3"


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


class MotoProcess:
    """`moto_server` on a free port, in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MotoProcess:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def bucket(self) -> Bucket:
        bucket = Bucket(self.endpoint, f"bench-{uuid.uuid4().hex[:10]}")
        bucket.client().create_bucket(Bucket=bucket.name,
                                      CreateBucketConfiguration={"LocationConstraint": REGION})
        return bucket


@dataclass
class Bucket:
    endpoint: str
    name: str

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="bench-key", aws_secret_access_key="bench-secret")

    def env(self) -> dict[str, str]:
        return {"FILESYNC_SOURCE": "s3", "SPACES_ENDPOINT": self.endpoint, "SPACES_KEY": "bench-key",
                "SPACES_SECRET": "bench-secret", "SPACES_BUCKET": self.name, "SPACES_REGION": REGION}


class TimedCloudflare(FakeCloudflare):
    """The fake Cloudflare, also noting when each request arrived (for the pacing benchmark)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(token=TOKEN, **kw)
        self.arrivals: list[tuple[float, str, str]] = []

    def __enter__(self) -> TimedCloudflare:
        self.start()
        return self

    def log_request(self, entry: Any) -> None:
        super().log_request(entry)
        self.arrivals.append((time.monotonic(), entry.method, entry.path))


def run_env(database_url: str, bucket: Bucket, cf: FakeCloudflare, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        **bucket.env(),
        "CLOUDFLARE_ACCOUNT_ID": cf.account_id,
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_API_BASE": cf.api_base,
        "FILESYNC_CLOUDFLARE_RPS": "100000",
        "FILESYNC_LOG_FILE": os.devnull,
        "FILESYNC_LOG_LEVEL": "WARNING",
        "FILESYNC_WORKER_ID": "bench",
    }
    env.update(extra)
    return env


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


class FilesyncProcess:
    """`python -m filesync run -q` as a child, its VmHWM read from /proc every 5 ms until it exits.

    VmHWM only grows, so the last reading is the peak but for the final few milliseconds. wait4's
    ru_maxrss is kept beside it, but it is not this process's alone: it is the largest of the process and
    the children it reaped, and botocore forks `uname -p` (a copy of the whole process) while it runs.
    """

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.args = args or ("run", "-q")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._samples: list[tuple[float, int]] = []
        self._hwm = 0
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> FilesyncProcess:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "filesync", *self.args], env=self.env, cwd="/",
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()

    def wait(self, timeout: float = 3600) -> ProcessResult:
        assert self.proc is not None and self.proc.stderr is not None
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.append(self.proc.stderr.read()),  # type: ignore[union-attr]
                                  daemon=True)
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
        reader.join(timeout=5)
        if self.proc.returncode not in (0, 130):
            raise RuntimeError(f"filesync exited {self.proc.returncode}: {b''.join(stderr).decode()[-2000:]}")
        return ProcessResult(self.proc.returncode, wall, self._hwm, usage.ru_maxrss * 1024, list(self._samples))


def run_filesync(env: dict[str, str], timeout: float = 3600) -> ProcessResult:
    return FilesyncProcess(env).start().wait(timeout)
