"""Issue 12, the operator's console: `status`, `runs`, `report`, `retry`, `run --dry-run` and its filters, the
progress display and events, the summary and alerts, each checked as a real subprocess against a database
holding a known mix of states (copied, skipped, parked, waiting for a retry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync import pipeline
from filesync.app import App
from filesync.ledger import reports
from filesync.settings import Environment
from filesync.testing.fakes.bunny import FakeBunny
from tests.media import image_bytes, video_bytes

ROUTES = "image/*=local;video/*=bunny"


@dataclass
class Mix:
    """A database after one run: 3 images copied, a PDF skipped, a missing object parked, a video waiting."""

    url: str
    src: Path
    out: Path
    bunny: FakeBunny
    env: dict[str, str]
    run_id: int

    def cli(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return cli({**self.env, **(env or {})}, *args, stdin=stdin, timeout=timeout)


COPIED = {"img1": "img1.jpg", "img2": "photos/2024/img2.jpg", "img3": "photos/2023/img3.png"}
SKIPPED = {"doc": "doc.pdf"}
PARKED = {"gone": "photos/gone.jpg"}
WAITING = {"clip": "clip.mp4"}
ALL = {**COPIED, **SKIPPED, **PARKED, **WAITING}
DATES = {"img1": "2024-06-21T10:00:00+00:00", "img2": "2024-01-05T10:00:00+00:00",
         "img3": "2023-03-01T10:00:00+00:00", "clip": "2024-02-01T10:00:00+00:00"}


def cli(env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd="/", input=stdin)


def env_for(database_url: str, src: Path, out: Path, bunny: FakeBunny, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "FILESYNC_SOURCE": "local",
        "FILESYNC_SOURCE_DIR": str(src),
        "FILESYNC_LOCAL_DIR": str(out),
        "FILESYNC_ROUTES": ROUTES,
        "BUNNY_STORAGE_ZONE": bunny.zone,
        "BUNNY_API_KEY": bunny.access_key,
        "BUNNY_ENDPOINT": bunny.url,
        "FILESYNC_REQUEST_RETRIES": "1",
        "FILESYNC_REQUEST_MAX_WAIT": "0.2",
        "FILESYNC_RUN_RETRIES": "0",
        "FILESYNC_LOG_FILE": os.devnull,
        **extra,
    }


def insert(url: str, rows: dict[str, str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for file_id, path in rows.items():
            conn.execute('INSERT INTO "File" (id, path, "dateTaken") VALUES (%s, %s, %s)',
                         (file_id, path, DATES.get(file_id)))


def write(src: Path, rows: dict[str, str]) -> None:
    for path in rows.values():
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".pdf"):
            target.write_bytes(b"%PDF-1.4\n%%EOF\n")
        elif path.endswith(".mp4"):
            target.write_bytes(video_bytes(4096))
        else:
            target.write_bytes(image_bytes("PNG" if path.endswith(".png") else "JPEG"))


def in_process_run(env: dict[str, str]) -> Any:
    with App.build(Environment(env, env_file=os.devnull)) as app:
        return pipeline.run(app)


@pytest.fixture
def bunny() -> Iterator[FakeBunny]:
    with FakeBunny() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def mix(tmp_path: Path, database_url: str, bunny: FakeBunny) -> Mix:
    src, out = tmp_path / "bucket", tmp_path / "out"
    src.mkdir()
    write(src, {k: v for k, v in ALL.items() if k not in PARKED})
    insert(database_url, ALL)
    env = env_for(database_url, src, out, bunny)
    bunny.fail_next(503, times=1000)
    summary = in_process_run(env)
    bunny.calm()
    assert (summary.copied, summary.skipped, summary.failed, summary.retry_later) == (3, 1, 1, 1), summary
    assert summary.run_id is not None
    return Mix(database_url, src, out, bunny, env, summary.run_id)


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


# --- the read models ----------------------------------------------------------------------------------------


def test_status_snapshot_counts_every_state_per_destination(mix: Mix) -> None:
    with App.build(Environment(mix.env, env_file=os.devnull)) as app:
        snap = reports.status(app.ledger, routes=app.config.routes, sinks_for=app.routes.sinks_for)
        history = reports.runs(app.ledger)
        one = reports.run(app.ledger, mix.run_id)
        assert reports.run(app.ledger, 10_000) is None

    assert snap.files == {"pending": 0, "in_progress": 0, "waiting": 1, "done": 3, "skipped": 1, "failed": 1}
    assert snap.destinations == {"local": {"done": 3}, "bunny": {"waiting": 1}, "-": {"skipped": 1, "failed": 1}}
    assert snap.oldest_due is None
    assert snap.next_retry is not None and snap.next_retry.file_id == "clip" and snap.next_retry.path == "clip.mp4"
    assert {(e.error_class, e.count) for e in snap.errors} == {("not_found", 1), ("server", 1)}
    assert {p.file_id: p.state for p in snap.problems} == {"gone": "failed", "doc": "skipped", "clip": "waiting"}
    assert snap.rows_without_id == 0
    assert snap.backfill is not None and not snap.backfill.changed and snap.backfill.files == 0
    assert [r.id for r in history] == [mix.run_id] and one == history[0]
    assert (one.copied, one.skipped, one.failed, one.retry_later, one.status) == (3, 1, 1, 1, "failed")
    json.dumps(snap.as_dict())  # JSON-ready as it is


def test_retry_makes_exactly_the_selected_files_due(mix: Mix) -> None:
    with App.build(Environment(mix.env, env_file=os.devnull)) as app:
        with pytest.raises(reports.UnknownFiles, match="nope"):
            reports.retry(app.ledger, reports.RetrySelection(file_ids=("gone", "nope")))
        assert reports.retry(app.ledger, reports.RetrySelection(waiting=True)) == 1
        due = {r[0] for r in rows(mix.url, "SELECT file_id FROM filesync.files WHERE state = 'pending' "
                                            "AND next_attempt_at <= now()")}
        assert due == {"clip"}
        assert reports.retry(app.ledger, reports.RetrySelection(error_class="not_found")) == 1
        assert rows(mix.url, "SELECT state, attempts, error FROM filesync.files WHERE file_id = 'gone'") == [
            ("pending", 0, None)]
        assert reports.retry(app.ledger, reports.RetrySelection(failed=True)) == 0


# --- the commands, as subprocesses -------------------------------------------------------------------------


def test_status_prints_the_true_numbers_with_paths_beside_ids(mix: Mix) -> None:
    done = mix.cli("status")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "files: 0 due now, 0 in progress, 1 waiting to retry, 3 done, 1 skipped, 1 failed" in out
    assert "gone  failed after 1 attempt(s)  [not_found] not found in bucket  (photos/gone.jpg)" in out
    assert "next retry: clip  clip.mp4  due " in out
    assert f"#{mix.run_id}" in out and "3 copied, 1 skipped, 1 failed, 1 to retry" in out
    by_sink = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  local")
               or line.startswith("  bunny")}
    assert by_sink["local"] == ["0", "0", "0", "3", "0", "0"] and by_sink["bunny"] == ["0", "0", "1", "0", "0", "0"]
    as_json = json.loads(mix.cli("status", "--json").stdout)
    assert as_json["files"]["done"] == 3 and as_json["waiting"] == 1 and as_json["next_retry"]["path"] == "clip.mp4"


def test_runs_lists_the_history(mix: Mix) -> None:
    text = mix.cli("runs")
    assert text.returncode == 0, text.stderr
    assert str(mix.run_id) in text.stdout and "failed" in text.stdout
    [record] = json.loads(mix.cli("runs", "--json").stdout)
    assert (record["id"], record["copied"], record["skipped"], record["failed"], record["retry_later"]) == (
        mix.run_id, 3, 1, 1, 1)
    assert record["duration"] is not None and record["duration"] >= 0


def test_help_and_usage_errors(mix: Mix) -> None:
    alone = cli({}, )
    assert alone.returncode == 0 and "COMMAND" in alone.stdout and "report" in alone.stdout
    for command in ("run", "status", "runs", "report", "retry"):
        helped = cli({}, command, "--help")
        assert helped.returncode == 0 and "example" in helped.stdout, command
    wrong = mix.cli("status", "--bogus")
    assert wrong.returncode == 2 and "usage: filesync status" in wrong.stderr and "--bogus" in wrong.stderr
