"""Issue 12, the operator's console: `status`, `runs`, `report`, `retry`, `run --dry-run` and its filters, the
progress display and events, the summary and alerts, each checked as a real subprocess against a database
holding a known mix of states (copied, skipped, parked, waiting for a retry)."""

from __future__ import annotations

import csv
import io
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


def test_report_csv_has_one_row_per_file_and_destination(mix: Mix, tmp_path: Path) -> None:
    done = mix.cli("report", "--csv")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(table[0]) == ["file_id", "path", "kind", "destination", "state", "remote_id", "url", "bytes",
                              "attempts", "error_class", "error", "copied_at", "derived",
                              "original_bytes"]
    got = {(r["file_id"], r["destination"]): r["state"] for r in table}
    assert got == {("img1", "local"): "done", ("img2", "local"): "done", ("img3", "local"): "done",
                   ("clip", "bunny"): "waiting", ("doc", ""): "skipped", ("gone", ""): "failed"}
    by_id = {r["file_id"]: r for r in table}
    assert by_id["img2"]["path"] == "photos/2024/img2.jpg" and by_id["img2"]["remote_id"] and by_id["img2"]["copied_at"]
    assert by_id["gone"]["error_class"] == "not_found" and "not found" in by_id["gone"]["error"]
    assert by_id["clip"]["error_class"] == "server" and by_id["clip"]["attempts"] == "1"

    failed = list(csv.DictReader(io.StringIO(mix.cli("report", "--csv", "--state", "failed").stdout)))
    assert [r["file_id"] for r in failed] == ["gone"]
    lines = mix.cli("report", "--json-lines", "--sink", "local").stdout.splitlines()
    assert sorted(json.loads(line)["file_id"] for line in lines) == ["img1", "img2", "img3"]
    of_run = list(csv.DictReader(io.StringIO(mix.cli("report", "--csv", "--run", str(mix.run_id)).stdout)))
    assert len(of_run) == 6
    assert mix.cli("report", "--csv", "--run", str(mix.run_id + 1)).stdout.count("\n") == 1  # the header only
    target = tmp_path / "report.csv"
    written = mix.cli("report", "--csv", "--output", str(target))
    assert written.returncode == 0 and "6 row(s) written" in written.stderr
    assert len(list(csv.DictReader(target.open()))) == 6
    assert mix.cli("report").returncode == 2  # a format is required


def test_retry_command_selects_exactly_and_refuses_unknown_ids(mix: Mix) -> None:
    def due() -> set[str]:
        return {r[0] for r in rows(mix.url, "SELECT file_id FROM filesync.files WHERE state = 'pending' "
                                            "AND next_attempt_at <= now()")}

    unknown = mix.cli("retry", "gone", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr and due() == set()
    assert mix.cli("retry").returncode == 2  # nothing selected: a usage error
    waiting = mix.cli("retry", "--waiting")
    assert waiting.returncode == 0 and "1 file(s) queued again" in waiting.stdout
    assert due() == {"clip"}
    assert "0 file(s) queued again" in mix.cli("retry", "--failed", "--path", "nothing/**").stdout
    named = mix.cli("retry", "gone", "img1")
    assert "1 file(s) queued again" in named.stdout and "img1: done, not retried" in named.stdout
    assert due() == {"clip", "gone"}
    assert rows(mix.url, "SELECT attempts, error FROM filesync.files WHERE file_id = 'gone'") == [(0, None)]
    assert "1 file(s) queued again" in mix.cli("retry", "--skipped").stdout
    assert due() == {"clip", "gone", "doc"}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every filesync table and the app's, row versions (xmin) included: any write shows."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND (table_schema = 'filesync' "
            "OR (table_schema = 'public' AND table_name = 'File')) ORDER BY 1")]
        out = {t: conn.execute(f"SELECT xmin::text, to_jsonb(x)::text FROM {t} AS x ORDER BY 2").fetchall()
               for t in tables}
        out["sequences"] = conn.execute("SELECT last_value, is_called FROM filesync.runs_id_seq").fetchall()
    return out


def test_dry_run_changes_nothing_and_says_why(mix: Mix) -> None:
    write(mix.src, {"img4": "photos/2024/img4.jpg", "doc2": "doc2.pdf"})
    insert(mix.url, {"img4": "photos/2024/img4.jpg", "doc2": "doc2.pdf", "lost": "lost.jpg"})
    before = dump(mix.url)
    requests_before = len(mix.bunny.requests)
    routes = {"FILESYNC_ROUTES": "image/*=local,bunny;video/*=bunny"}  # bunny added: a backfill

    done = mix.cli("run", "--dry-run", env=routes)

    assert done.returncode == 0, done.stderr
    assert dump(mix.url) == before
    assert len(mix.bunny.requests) == requests_before  # no destination was contacted at all
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line[:1].isalpha() and " " in line
             and line.split()[0] in {"copy", "skip", "fail", "wait", "parked", "busy", "later", "done"}}
    assert lines["img4"].startswith("copy") and "-> local, bunny" in lines["img4"]
    assert lines["doc2"].startswith("skip") and "unsupported type application/pdf" in lines["doc2"]
    assert lines["lost"].startswith("fail") and "not found" in lines["lost"]
    assert lines["gone"].startswith("parked") and lines["clip"].startswith("wait") and lines["doc"].startswith("skip")
    assert "backfill would send 3 already-handled file(s)" in done.stdout and "bunny 3" in done.stdout
    assert "dry run: 1 to copy" in done.stdout
    status = mix.cli("status", env=routes)
    assert "the next run's backfill sends 3 already-handled file(s)" in status.stdout

    narrowed = mix.cli("run", "--dry-run", "--path", "photos/**")
    assert {line.split()[1] for line in narrowed.stdout.splitlines()
            if line.split() and line.split()[0] in {"copy", "parked"}} == {"img4", "gone"}
    assert "file(s) not selected" in narrowed.stdout
    assert dump(mix.url) == before


def test_dry_run_on_a_database_filesync_never_touched(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    write(src, {"a": "a.jpg"})
    insert(database_url, {"a": "a.jpg"})
    with psycopg.connect(database_url) as conn:
        app_before = conn.execute('SELECT xmin::text, to_jsonb(f)::text FROM "File" f').fetchall()

    done = cli(env_for(database_url, src, tmp_path / "out", bunny), "run", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert "copy   a  a.jpg  -> local" in done.stdout and "no ledger yet" in done.stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'filesync'"
                            ).fetchone() == (0,)
        assert conn.execute('SELECT xmin::text, to_jsonb(f)::text FROM "File" f').fetchall() == app_before


# --- filters, cut-offs and the end-of-run retry pass ---------------------------------------------------------------


def copied(url: str) -> set[str]:
    return {r[0] for r in rows(url, 'SELECT id FROM "File" WHERE "copiedToCloudflare"')}


def test_filters_select_exactly_the_right_files(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    files = {"a1": "new/a/1.jpg", "a2": "new/a/2.jpg", "b1": "new/b/1.jpg", "c1": "other/c1.jpg",
             "d1": "d1.jpg", "d2": "d2.jpg", "e1": "e1.jpg", "e2": "e2.jpg"}
    src = tmp_path / "bucket"
    src.mkdir()
    write(src, files)
    insert(database_url, files)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('UPDATE "File" SET "dateTaken" = %s WHERE id = %s', ("2024-01-15T00:00:00+00:00", "d1"))
        conn.execute('UPDATE "File" SET "dateTaken" = %s WHERE id = %s', ("2024-03-15T00:00:00+00:00", "d2"))
    env = env_for(database_url, src, tmp_path / "out", bunny)

    def run(*args: str, stdin: str | None = None) -> set[str]:
        before = copied(database_url)
        done = cli(env, "run", *args, stdin=stdin)
        assert done.returncode == 0, done.stdout + done.stderr
        return copied(database_url) - before

    assert run("--path", "new/a/*") == {"a1", "a2"}
    assert run("--path", "new/**", "--path", "other/*") == {"b1", "c1"}
    assert run("--since", "2024-01-01", "--until", "2024-02-01") == {"d1"}
    assert run("--file", "e2") == {"e2"}
    assert run("--files-from", "-", stdin="# ids\nd2\n\n") == {"d2"}
    assert run("--limit", "1") == {"e1"}
    assert run() == set()


def test_cut_off_and_usage_errors_of_run(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    files = {f"f{n}": f"f{n}.jpg" for n in range(6)}
    src = tmp_path / "bucket"
    src.mkdir()
    write(src, files)
    insert(database_url, files)
    env = env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_CONCURRENCY="1", FILESYNC_CLAIM_BATCH="1")

    cut = cli(env, "run", "--max-transfer", "1")
    assert cut.returncode == 7, cut.stdout + cut.stderr
    assert "CUT OFF: --max-transfer 1 bytes reached" in cut.stdout and len(copied(database_url)) == 1
    assert cli(env, "run", "--max-duration", "soon").returncode == 2
    bad_sink = cli(env, "run", "--sink", "nowhere")
    assert bad_sink.returncode == 2 and "--sink nowhere" in bad_sink.stderr
    unknown = cli(env, "run", "--frobnicate")
    assert unknown.returncode == 2 and "usage: filesync run" in unknown.stderr


def test_end_of_run_retry_pass_copies_a_file_whose_first_try_failed(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    write(src, WAITING)
    insert(database_url, WAITING)
    bunny.fail_next(503, times=1, method="PUT")

    done = cli(env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_RUN_RETRIES="1"), "run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 copied" in done.stdout and "0 to retry later" in done.stdout
    assert "1 end-of-run retry pass(es)" in done.stdout and "failures" not in done.stdout
    assert copied(database_url) == {"clip"}


def test_summary_names_failures_by_path_and_waiting_files_with_their_due_time(mix: Mix) -> None:
    write(mix.src, {"v2": "more/v2.mp4"})
    insert(mix.url, {"v2": "more/v2.mp4"})
    mix.bunny.fail_next(503, times=100)
    done = mix.cli("run")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "files/s" in out and "MB/s" in out and "in " in out
    assert "v2  more/v2.mp4  [bunny]  waiting: bunny: injected 503" in out
    assert "waiting for a later retry (1):" in out and "  v2  more/v2.mp4  due " in out
    assert "backlog: 0 file(s) due now, 2 waiting for a retry (next due " in out
    assert "exit code 1" in out


# --- progress: a terminal's display, a log's events ---------------------------------------------------------------


def slow_videos(tmp_path: Path, database_url: str, n: int) -> Path:
    src = tmp_path / "bucket"
    src.mkdir()
    videos = {f"v{i}": f"v{i}.mp4" for i in range(n)}
    write(src, videos)
    insert(database_url, videos)
    return src


def test_display_under_a_terminal_shows_rate_eta_and_totals(tmp_path: Path, database_url: str,
                                                            bunny: FakeBunny) -> None:
    import pty
    import select
    import time

    src = slow_videos(tmp_path, database_url, 6)
    bunny.slow_next(0.6, times=6, method="PUT")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TERM": "xterm-256color", "COLUMNS": "120",
           **env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_CONCURRENCY="2")}
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "filesync", "run"], env=env, stdin=secondary, stdout=secondary,
                            stderr=secondary, cwd="/", close_fds=True)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(primary)
    screen = b"".join(chunks).decode("utf-8", "replace")

    assert proc.returncode == 0, screen
    assert "/6 files" in screen and "files/s" in screen and "MB/s" in screen and "ETA" in screen
    assert "v" in screen and "-> bunny" in screen  # a file in flight, with its destination
    assert "bunny: " in screen and "copied" in screen  # per-destination counts
    assert "filesync run 1: 6 copied" in screen  # the summary after it


def test_off_a_terminal_run_progress_events_carry_the_figures(tmp_path: Path, database_url: str,
                                                              bunny: FakeBunny) -> None:
    src = slow_videos(tmp_path, database_url, 4)
    bunny.slow_next(0.5, times=4, method="PUT")
    env = env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_CONCURRENCY="1",
                  FILESYNC_PROGRESS_SECONDS="0.3")

    done = cli(env, "run", "--quiet")

    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "run_progress"]
    assert len(progress) >= 3, [e["event"] for e in events]
    last = progress[-1]
    assert last["files_total"] == 4 and 0 <= last["files_done"] <= 4
    for key in ("bytes_sent", "files_per_s", "mb_per_s", "eta_s", "per_sink", "retries", "failed", "in_flight"):
        assert key in last
    assert any(e["in_flight"] and e["in_flight"][0]["sink"] == "bunny" for e in progress)
    assert events[-1]["event"] == "run_finished"  # no progress event after the end


# --- alerts ----------------------------------------------------------------------------------------------------


class Webhook:
    """A local HTTP server that records every POST body."""

    def __init__(self, status: int = 200) -> None:
        import http.server
        import threading

        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path-0xALERT"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_alerts_once_per_condition_until_it_clears(tmp_path: Path, database_url: str,
                                                         bunny: FakeBunny) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    write(src, {"clip": "clip.mp4", "img": "img.jpg"})
    insert(database_url, {"clip": "clip.mp4"})
    hook = Webhook()
    try:
        env = env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_ALERT_WEBHOOK=hook.url,
                      FILESYNC_RETRY_BACKOFF_SECONDS="0.01", FILESYNC_ALERT_STALL_RUNS="100")
        bunny.fail_next(503, times=1000)
        first = cli(env, "run")
        second = cli(env, "run")
        assert (first.returncode, second.returncode) == (1, 1), first.stdout + second.stdout
        assert len(hook.bodies) == 1
        body = hook.bodies[0]
        assert "failures" in body["text"] and "filesync status" in body["text"]
        assert body["filesync"]["conditions"] == ["failures"] and body["filesync"]["retry_later"] == 1
        assert body["filesync"]["top_errors"][0]["error_class"] == "server"
        assert "0xALERT" not in first.stdout + first.stderr

        bunny.calm()
        assert cli(env, "run").returncode == 0  # the condition clears
        insert(database_url, {"img": "img.jpg"})
        (src / "img.jpg").unlink()
        assert cli(env, "run").returncode == 1  # it appears again: a new alert
        assert len(hook.bodies) == 2 and "1 failed" in hook.bodies[1]["text"]
    finally:
        hook.close()


def test_a_failing_webhook_never_fails_the_run(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    insert(database_url, {"gone": "gone.jpg"})
    hook = Webhook(status=500)
    log = tmp_path / "filesync.log"
    try:
        env = env_for(database_url, src, tmp_path / "out", bunny, FILESYNC_ALERT_WEBHOOK=hook.url,
                      FILESYNC_LOG_FILE=str(log))
        done = cli(env, "run")
    finally:
        hook.close()
    assert done.returncode == 1, done.stdout + done.stderr  # the file's failure, not the webhook's
    events = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [e for e in events if e["event"] == "alert_failed"]
    assert len(failed) == 1 and len(hook.bodies) == 1
    assert "0xALERT" not in log.read_text()
