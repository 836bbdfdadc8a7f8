"""Helpers for driving `filesync daemon` / `filesync run` as real subprocesses against a real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from PIL import Image

from filesync.testing.fakes.base import free_port

DB_PASSWORD = "Pg-Pass-7f3Qx-Distinct"
CF_TOKEN = "Cf-Token-9kLm2-Distinct"
SPACES_SECRET = "Spaces-Secret-4hTz8-Distinct"
SECRETS = (DB_PASSWORD, CF_TOKEN, SPACES_SECRET)
REQUIRED_FIELDS = ("timestamp", "level", "event")


def with_password(url: str, password: str = DB_PASSWORD) -> str:
    """The same database URL carrying a password (trust auth ignores it; redaction must not)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def png_bytes(size: int, seed: int) -> bytes:
    """A real PNG header (so type detection says image/png) padded to `size` bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (4 + seed % 5, 4), (seed % 256, 0, 0)).save(buf, "PNG")
    head = buf.getvalue()
    if size <= len(head):
        return head
    return head + os.urandom(size - len(head))


def seed(url: str, source: Path, files: Mapping[str, int], start: int = 0) -> dict[str, bytes]:
    """Write PNG files into `source` and their rows into the app's table; returns {id: bytes}."""
    source.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for i, (file_id, size) in enumerate(files.items(), start=start):
            data = png_bytes(size, i)
            (source / f"{file_id}.png").write_bytes(data)
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (file_id, f"{file_id}.png"))
            out[file_id] = data
    return out


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def base_env(tmp: Path, database_url: str, **extra: str) -> dict[str, str]:
    """A clean environment: only what a deployment would set, plus distinctive secrets to hunt for."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
        "FILESYNC_ENV_FILE": f"-{tmp / 'absent.env'}",  # optional: no settings file, only these
        "FILESYNC_HOME": str(tmp / "home"),
        "DATABASE_URL": with_password(database_url),
        "FILESYNC_SOURCE": "local",
        "FILESYNC_SOURCE_DIR": str(tmp / "src"),
        "FILESYNC_ROUTES": "image/*=local;video/*=local",
        "FILESYNC_LOCAL_DIR": str(tmp / "dst"),
        "FILESYNC_LOG_FILE": str(tmp / "logs" / "filesync.log"),
        "CLOUDFLARE_API_TOKEN": CF_TOKEN,
        "SPACES_SECRET": SPACES_SECRET,
        "FILESYNC_WORKER_ID": "acceptance",
    }
    env.update(extra)
    return env


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every line of the JSON-lines log; fails on a line that is not a JSON object."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        record = json.loads(line)
        assert isinstance(record, dict), f"line {number} is not a JSON object: {line!r}"
        records.append(record)
    return records


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def without_root_override() -> list[str]:
    """A command prefix under which a folder made read-only refuses writes even when the tests run as root:
    root keeps its uid but loses CAP_DAC_OVERRIDE (setpriv, from util-linux). Skips when that cannot be had."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder would not refuse writes")
    return [setpriv, "--bounding-set=-dac_override", "--inh-caps=-dac_override"]


@dataclass
class Daemon:
    """`python -m filesync daemon` in a child process, its output in files (never a full pipe).

    Events are read from the log file, or from stdout (the same JSON lines) when the log is not a regular
    file (`FILESYNC_LOG_FILE=/dev/full`). `wrapper` prefixes the command (`without_root_override()`).
    """

    env: dict[str, str]
    cwd: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    wrapper: list[str] = field(default_factory=list)
    out: Path = field(init=False)
    err: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.cwd / "daemon.stdout"
        self.err = self.cwd / "daemon.stderr"
        self.log = Path(self.env["FILESYNC_LOG_FILE"])

    def start(self) -> Daemon:
        self.port = self.port or free_port()
        self.env.setdefault("FILESYNC_HTTP_PORT", str(self.port))
        self.env.setdefault("FILESYNC_HTTP_HOST", "127.0.0.1")
        with self.out.open("ab") as out, self.err.open("ab") as err:
            proc = self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "filesync", "daemon"],
                                                env=self.env, cwd=self.cwd, stdout=out, stderr=err)
        wait_until(lambda: self.events("daemon_started") or proc.poll() is not None, 60, "daemon start")
        assert proc.poll() is None, f"daemon exited early: {self.stderr()}"
        return self

    def records(self) -> list[dict[str, Any]]:
        if self.log.exists() and not self.log.is_file():
            return [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]
        return read_log(self.log)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def wait_events(self, name: str, count: int, timeout: float) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = wait_until(
            lambda: (lambda found: found if len(found) >= count else None)(self.events(name)),
            timeout, f"{count} x {name}")
        return found

    def http(self, path: str, timeout: float = 20) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        if "{" in key:
            metric, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            metric, got = key, ""
        if metric == name and got == want:
            return float(value)
    return 0.0


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret {secret[:6]}... leaked"
