"""The daemon's JSON API (issue 15) as a script calls it: a real `filesync daemon` subprocess, real HTTP
requests, a ledger holding a known mix of states. Status codes, pagination, the token rules, the live
progress of a run, and no secret in any answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from filesync.testing.fakes.base import ASGIApp, Message, Receive, Scope, Send, free_port
from filesync.testing.fakes.bunny import FakeBunny
from tests.acceptance.daemon_support import (
    CF_TOKEN,
    Daemon,
    assert_no_secrets,
    base_env,
    query,
    seed,
    wait_until,
    with_password,
)

TOKEN = "Api-Token-5pQr8-Distinct-0123"
NEVER = "0 0 1 1 *"  # the schedule never fires during a test: runs start only through POST /api/run

#: The known mix: (id, path, state, attempts, error class, error, due in seconds, transfers)
#: transfers: (sink, state, attempts, remote id, url, error)
FILES: list[tuple[str, str, str, int, str | None, str | None, int, list[tuple[Any, ...]]]] = [
    ("d1", "photos/2024/beach.png", "done", 1, None, None, 0, [
        ("local", "done", 1, "photos/2024/beach.png", "https://cdn.example/photos/2024/beach.png", None),
        ("cloudflare-images", "done", 1, "img-d1", "https://imagedelivery.example/h/img-d1/public", None)]),
    ("d2", "photos/2024/Dune.png", "done", 1, None, None, 0, [
        ("local", "done", 1, "photos/2024/Dune.png", "https://cdn.example/photos/2024/Dune.png", None)]),
    ("d3", "photos/2023/forest.png", "done", 2, None, None, 0, [
        ("local", "done", 2, "photos/2023/forest.png", None, None)]),
    ("f1", "photos/2024/broken.png", "failed", 5, "client", "HTTP 400: image is corrupt", 0, [
        ("local", "done", 1, "photos/2024/broken.png", "https://cdn.example/photos/2024/broken.png", None),
        ("cloudflare-images", "failed", 5, None, None, "HTTP 400: image is corrupt")]),
    ("f2", "photos/2022/gone.png", "failed", 1, "not_found", "not found in bucket", 0, []),
    ("w1", "videos/clip.mp4", "pending", 2, "server", "HTTP 503: try later", 86400, [
        ("local", "pending", 2, None, None, "HTTP 503: try later")]),
    ("p1", "photos/2025/new-1.png", "pending", 0, None, None, 0, []),
    ("p2", "photos/2025/new-2.png", "pending", 0, None, None, 0, []),
    ("s1", "docs/readme.txt", "skipped", 0, "unsupported", "no route for text/plain", 0, []),
]
RUNS = [("ok", 3, 0), ("failed", 1, 2), ("ok", 0, 0)]  # (status, copied, failed), oldest first
STATE_COUNTS = {"pending": 2, "in_progress": 0, "waiting": 1, "done": 3, "skipped": 1, "failed": 2}
ENDPOINTS = {("get", "/api/status"), ("get", "/api/runs"), ("get", "/api/runs/{id}"), ("get", "/api/files"),
             ("get", "/api/files/{id}"), ("post", "/api/retry"), ("post", "/api/run"), ("get", "/api/openapi.json")}


def migrate(tmp: Path, database_url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "filesync", "migrate"], env=base_env(tmp, database_url), cwd=tmp,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def seed_ledger(tmp: Path, database_url: str) -> list[int]:
    """filesync's tables holding FILES and RUNS (and the app's rows for them); the run ids, oldest first."""
    migrate(tmp, database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for file_id, path, state, attempts, error_class, error, due_in, transfers in FILES:
            conn.execute(
                "INSERT INTO filesync.files (file_id, path, state, kind, mime, size, attempts, next_attempt_at, "
                "error_class, error, done_at) VALUES (%s, %s, %s, 'image', 'image/png', 1000, %s, "
                "now() + make_interval(secs => %s), %s, %s, CASE WHEN %s = 'done' THEN now() END)",
                (file_id, path, state, attempts, due_in, error_class, error, state))
            conn.execute('INSERT INTO "File" (id, path, "copiedToCloudflare") VALUES (%s, %s, %s)',
                         (file_id, path, state == "done"))
            for sink, t_state, t_attempts, remote_id, url, t_error in transfers:
                conn.execute(
                    "INSERT INTO filesync.transfers (file_id, sink, state, attempts, remote_id, remote_url, bytes, "
                    "error, done_at) VALUES (%s, %s, %s, %s, %s, %s, 1000, %s, "
                    "CASE WHEN %s = 'done' THEN now() END)",
                    (file_id, sink, t_state, t_attempts, remote_id, url, t_error, t_state))
        ids = []
        for n, (status, copied, failed) in enumerate(RUNS):
            row = conn.execute(
                "INSERT INTO filesync.runs (worker, host, pid, started_at, finished_at, status, copied, failed, bytes) "
                "VALUES ('acceptance@host/1', 'host', 1, now() - make_interval(hours => %s), "
                "now() - make_interval(hours => %s) + interval '1 minute', %s, %s, %s, %s) RETURNING id",
                (10 - n, 10 - n, status, copied, failed, copied * 1000)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def ledger_counts(database_url: str) -> dict[str, int]:
    """Files per operator's state, counted here in SQL of the test's own."""
    rows = query(database_url, """
        SELECT CASE WHEN state = 'pending' AND claimed_until > now() THEN 'in_progress'
                    WHEN state = 'pending' AND next_attempt_at > now() THEN 'waiting' ELSE state END, count(*)
        FROM filesync.files GROUP BY 1""")
    return {**dict.fromkeys(STATE_COUNTS, 0), **{state: int(n) for state, n in rows}}


class Client:
    """urllib against the daemon: every answer is kept, to hunt for secrets at the end."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token
        self.bodies: list[str] = []

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        bearer = token if token is not None else self.token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, text, got = resp.status, resp.read().decode(), dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            status, text, got = exc.code, exc.read().decode(), dict(exc.headers.items())
        self.bodies.append(text + json.dumps(got))
        is_json = got.get("Content-Type", "").startswith("application/json")
        return status, json.loads(text) if is_json else text, got

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, body, _ = self.call("GET", path, **kw)
        return status, body

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, body, _ = self.call("POST", path, body if body is not None else {}, **kw)
        return status, body

    def assert_no_secrets(self) -> None:
        assert_no_secrets(*self.bodies)
        for text in self.bodies:
            assert TOKEN not in text, "the API token leaked into an answer"


def start(tmp: Path, database_url: str, **extra: str) -> Daemon:
    """A daemon that never runs on its own; each in a folder of its own (its log tells when it has started)."""
    folder = tmp / f"daemon-{len(list(tmp.glob('daemon-*')))}"
    folder.mkdir()
    env = base_env(folder, database_url, FILESYNC_SCHEDULE=NEVER, FILESYNC_RUN_ON_START="false",
                   FILESYNC_SOURCE_DIR=str(tmp / "src"), **extra)
    return Daemon(env, folder).start()


@pytest.fixture
def seeded(tmp_path: Path, database_url: str) -> list[int]:
    return seed_ledger(tmp_path, database_url)


@pytest.fixture
def daemon(tmp_path: Path, database_url: str, seeded: list[int]) -> Iterator[Daemon]:
    running = start(tmp_path, database_url, FILESYNC_HTTP_TOKEN=TOKEN)
    try:
        yield running
    finally:
        running.kill()


def _all_files(client: Client, params: str, limit: int) -> tuple[list[str], int]:
    """Every file id over every page; how many pages that took."""
    ids: list[str] = []
    cursor, pages = "", 0
    while True:
        status, body = client.get(f"/api/files?limit={limit}&{params}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        pages += 1
        assert len(body["files"]) <= limit
        ids += [f["file_id"] for f in body["files"]]
        if body["next_cursor"] is None:
            return ids, pages
        cursor = body["next_cursor"]
        assert pages < 20, "pagination does not end"


def test_read_endpoints_answer_what_the_ledger_holds(daemon: Daemon, seeded: list[int], database_url: str) -> None:
    client = Client(daemon.port, TOKEN)

    status, body = client.get("/api/status")
    assert status == 200, body
    assert body["files"] == STATE_COUNTS == ledger_counts(database_url)
    assert body["destinations"]["local"] == {"done": 4, "waiting": 1}
    assert body["destinations"]["cloudflare-images"] == {"done": 1, "failed": 1}
    assert body["due_now"] == 2 and body["waiting"] == 1
    assert body["oldest_due"]["file_id"] in {"p1", "p2"} and body["next_retry"]["file_id"] == "w1"
    assert [r["id"] for r in body["runs"]] == seeded[::-1]

    status, body = client.get("/api/runs?limit=2")
    assert status == 200 and [r["id"] for r in body["runs"]] == seeded[:0:-1]
    assert all(r["progress"] is None for r in body["runs"])
    for bad in ("0", "201", "two"):
        status, body = client.get(f"/api/runs?limit={bad}")
        assert status == 400 and "limit" in body["error"]
    status, body = client.get(f"/api/runs/{seeded[1]}")
    assert status == 200 and (body["status"], body["copied"], body["failed"]) == RUNS[1]
    assert body["progress"] is None and body["duration"] == 60
    assert client.get("/api/runs/999999")[0] == 404
    assert client.get("/api/runs/latest")[0] == 400

    # Keyset pages: every file once, in id order, whatever the page size.
    every = sorted(f[0] for f in FILES)
    assert _all_files(client, "", 4) == (every, 3)
    assert _all_files(client, "", 500) == (every, 1)
    assert _all_files(client, "state=failed", 1) == (["f1", "f2"], 2)
    assert _all_files(client, "state=waiting", 10)[0] == ["w1"]
    assert _all_files(client, "sink=cloudflare-images", 10)[0] == ["d1", "f1"]
    assert _all_files(client, "state=done&sink=cloudflare-images", 10)[0] == ["d1"]
    assert _all_files(client, "q=DUNE", 10)[0] == ["d2"]  # a path substring, any case
    assert _all_files(client, "q=photos/2024", 10)[0] == ["d1", "d2", "f1"]
    assert _all_files(client, "q=p", 10)[0] == sorted(f[0] for f in FILES if "p" in f[0] or "p" in f[1].lower())
    assert _all_files(client, "q=" + quote("%"), 10)[0] == []  # searched for, not a wildcard
    status, body = client.get("/api/files?state=failed")
    f1 = next(f for f in body["files"] if f["file_id"] == "f1")
    assert {t["sink"]: (t["state"], t["attempts"], t["error"]) for t in f1["transfers"]} == {
        "local": ("done", 1, None), "cloudflare-images": ("failed", 5, "HTTP 400: image is corrupt")}
    for bad in ("state=lost", "cursor=!!!", "limit=0", "limit=501"):
        status, body = client.get(f"/api/files?{bad}")
        assert status == 400 and body["error"], bad

    status, body = client.get("/api/files/d1")
    assert status == 200
    assert body["state"] == "done" and body["app_copied"] is True and body["path"] == "photos/2024/beach.png"
    assert {t["sink"]: (t["remote_id"], t["url"]) for t in body["transfers"]} == {
        "local": ("photos/2024/beach.png", "https://cdn.example/photos/2024/beach.png"),
        "cloudflare-images": ("img-d1", "https://imagedelivery.example/h/img-d1/public")}
    status, body = client.get("/api/files/w1")
    assert body["state"] == "waiting" and body["attempts"] == 2 and body["error"] == "HTTP 503: try later"
    assert body["app_copied"] is False and body["transfers"][0]["resumable"] is False
    status, body = client.get("/api/files/no-such-file")
    assert status == 404 and "no-such-file" in body["error"]

    status, body = client.get("/api/nothing-here")
    assert status == 404 and body["error"]
    status, body, headers = client.call("DELETE", "/api/status")
    assert status == 405 and headers["Allow"] == "GET"
    # /healthz and /metrics are as they were
    assert client.get("/healthz")[0] == 200
    status, text, headers = client.call("GET", "/metrics")
    assert status == 200 and "filesync_runs_total" in text and headers["Content-Type"].startswith("text/plain")
    client.assert_no_secrets()


def test_openapi_documents_exactly_the_endpoints_and_each_answers(daemon: Daemon, seeded: list[int]) -> None:
    client = Client(daemon.port, TOKEN)
    status, doc = client.get("/api/openapi.json", token="")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert documented == ENDPOINTS
    examples = {"/api/runs/{id}": f"/api/runs/{seeded[0]}", "/api/files/{id}": "/api/files/d1"}
    bodies = {"/api/retry": {"file_ids": ["f2"]}, "/api/run": {}}
    for method, path in sorted(documented):
        status, body, _ = client.call(method.upper(), examples.get(path, path), bodies.get(path))
        responses = doc["paths"][path][method]["responses"]
        assert str(status) in responses and status < 300, (method, path, status, body)
        for param in doc["paths"][path][method].get("parameters", []):
            if param["in"] == "query" and "enum" in param["schema"]:
                for value in param["schema"]["enum"]:
                    assert client.get(f"{path}?{param['name']}={value}")[0] == 200
    client.assert_no_secrets()


def test_token_rules(tmp_path: Path, database_url: str, seeded: list[int]) -> None:
    # A token set: everything under /api needs it, compared exactly; the page, the document, health stay open.
    daemon = start(tmp_path, database_url, FILESYNC_HTTP_TOKEN=TOKEN)
    client = Client(daemon.port)
    try:
        for method, path in (("GET", "/api/status"), ("GET", "/api/files"), ("POST", "/api/retry"),
                             ("POST", "/api/run")):
            for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.lower()):
                status, body, headers = client.call(method, path, {} if method == "POST" else None, token=wrong)
                assert status == 401, (method, path, wrong, body)
                assert headers["WWW-Authenticate"].startswith("Bearer") and "FILESYNC_HTTP_TOKEN" in body["error"]
        status, body, _ = client.call("GET", "/api/status", headers={"Authorization": f"Basic {TOKEN}"})
        assert status == 401
        assert client.get("/api/status", token=TOKEN)[0] == 200
        assert client.post("/api/retry", {"file_ids": ["f2"]}, token=TOKEN) == (200, {"queued": 1})
        for open_path in ("/", "/assets/app.js", "/api/openapi.json", "/healthz", "/metrics"):
            assert client.call("GET", open_path)[0] == 200, open_path
    finally:
        daemon.kill()

    # No token, on loopback: reads open (to requests addressed to localhost), changes disabled.
    daemon = start(tmp_path, database_url)
    client.base = f"http://127.0.0.1:{daemon.port}"
    try:
        assert client.get("/api/status")[0] == 200
        assert client.get("/api/status", headers={"Host": f"localhost:{daemon.port}"})[0] == 200
        status, body = client.get("/api/status", headers={"Host": f"rebound.example:{daemon.port}"})
        assert status == 403 and "localhost" in body["error"]
        for path in ("/api/retry", "/api/run"):
            status, body = client.post(path, {"failed": True}, token=TOKEN)
            assert status == 403 and "FILESYNC_HTTP_TOKEN" in body["error"], body
        assert query(database_url, "SELECT count(*) FROM filesync.files WHERE state = 'failed'")[0][0] == 1
    finally:
        daemon.kill()

    # No token, on every address: reads closed too; health and the page still answer.
    daemon = start(tmp_path, database_url, FILESYNC_HTTP_HOST="0.0.0.0")
    client.base = f"http://127.0.0.1:{daemon.port}"
    try:
        for path in ("/api/status", "/api/runs", "/api/files", "/api/files/d1", f"/api/runs/{seeded[0]}"):
            status, body = client.get(path)
            assert status == 403 and "FILESYNC_HTTP_TOKEN" in body["error"], path
        assert client.get("/healthz")[0] == 200 and client.call("GET", "/")[0] == 200
    finally:
        daemon.kill()
    client.assert_no_secrets()


def test_a_short_token_is_refused_at_start_without_showing_it(tmp_path: Path, database_url: str) -> None:
    env = base_env(tmp_path, database_url, FILESYNC_HTTP_TOKEN="short-secret-1")
    done = subprocess.run([sys.executable, "-m", "filesync", "daemon"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "FILESYNC_HTTP_TOKEN" in done.stderr
    assert "short-secret-1" not in done.stderr + done.stdout


def test_retry_selectors_and_bad_bodies(daemon: Daemon, database_url: str) -> None:
    client = Client(daemon.port, TOKEN)

    def state_of(file_id: str) -> tuple[str, int]:
        row = query(database_url, "SELECT state, attempts FROM filesync.files WHERE file_id = %s", (file_id,))[0]
        return str(row[0]), int(row[1])

    for raw in (b"{", b"[1]", b'"failed"'):
        status, body, _ = client.call("POST", "/api/retry", raw=raw)
        assert status == 400 and "body" in body["error"]
    for bad in ({}, {"failed": "yes"}, {"file_ids": "f1", "bogus": True}, {"file_ids": [1]},
                {"since": "last week"}, {"all": False}):
        status, body = client.post("/api/retry", bad)
        assert status == 400 and body["error"], bad
    status, body = client.post("/api/retry", {"file_ids": ["f1", "nope-1"]})
    assert status == 400 and body["unknown_ids"] == ["nope-1"]
    assert state_of("f1") == ("failed", 5)  # nothing changed

    assert client.post("/api/retry", {"file_ids": ["f1"]}) == (200, {"queued": 1})
    assert state_of("f1") == ("pending", 0)
    transfers = query(database_url, "SELECT sink, state FROM filesync.transfers WHERE file_id = 'f1' ORDER BY sink")
    assert transfers == [("cloudflare-images", "pending"), ("local", "done")]
    assert client.post("/api/retry", {"failed": True, "path": ["photos/2022/*"]}) == (200, {"queued": 1})
    assert state_of("f2") == ("pending", 0)
    assert client.post("/api/retry", {"skipped": True}) == (200, {"queued": 1})
    assert client.post("/api/retry", {"failed": True}) == (200, {"queued": 0})
    status, body = client.get("/api/status")
    assert body["files"]["failed"] == 0 and body["files"]["skipped"] == 0 and body["files"]["pending"] == 5
    client.assert_no_secrets()


def test_secrets_stored_in_the_ledger_are_masked_in_every_answer(daemon: Daemon, database_url: str) -> None:
    """Errors are redacted when stored; a row written before a secret was known is masked on the way out too."""
    leaked = f"refused with {CF_TOKEN} by {with_password('postgresql://u@db.example/app')} (token {TOKEN})"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE filesync.files SET error = %s WHERE file_id = 'f2'", (leaked,))
        conn.execute("UPDATE filesync.transfers SET error = %s WHERE file_id = 'f1' AND state = 'failed'", (leaked,))
    client = Client(daemon.port, TOKEN)
    for path in ("/api/files/f2", "/api/files/f1", "/api/files?state=failed", "/api/status"):
        status, body = client.get(path)
        assert status == 200 and "refused with ***" in json.dumps(body), path
    client.assert_no_secrets()


def test_a_database_no_run_has_migrated_answers_503_saying_so(tmp_path: Path, database_url: str) -> None:
    daemon = start(tmp_path, database_url)
    client = Client(daemon.port)
    try:
        for path in ("/api/status", "/api/runs", "/api/files", "/api/files/x", "/api/runs/1"):
            status, body = client.get(path)
            assert status == 503 and "tables do not exist" in body["error"], (path, body)
        assert not daemon.events("api_failed")
    finally:
        daemon.kill()


def test_database_down_is_a_503_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://filesync@127.0.0.1:{free_port()}/app"
    env = base_env(tmp_path, url, FILESYNC_SCHEDULE=NEVER, FILESYNC_RUN_ON_START="false")
    assert with_password(url) == env["DATABASE_URL"]
    daemon = Daemon(env, tmp_path).start()
    client = Client(daemon.port)
    try:
        for path in ("/api/status", "/api/runs", "/api/files", "/api/files/x", "/api/runs/1"):
            status, body = client.get(path)
            assert status == 503 and body["error"].startswith("database unavailable"), (path, body)
        assert client.call("GET", "/")[0] == 200
    finally:
        daemon.kill()
    client.assert_no_secrets()


class GatedBunny(FakeBunny):
    """Bunny storage that reads no PUT body until the test opens the gate: a run stays in flight, partway."""

    name = "gated-bunny"

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def build_app(self) -> ASGIApp:
        inner = super().build_app()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "PUT":
                await inner(scope, receive, send)
                return

            async def gated_receive() -> Message:
                while not self.gate.is_set():
                    await asyncio.sleep(0.05)
                return await receive()

            await inner(scope, gated_receive, send)

        return app


def test_run_now_shows_live_progress_and_never_overlaps(tmp_path: Path, database_url: str) -> None:
    sizes = {"big-1": 12 * 1024 * 1024, "big-2": 3 * 1024 * 1024}
    migrate(tmp_path, database_url)
    seed(database_url, tmp_path / "src", sizes)
    with GatedBunny() as fake:
        assert isinstance(fake, GatedBunny)
        daemon = start(tmp_path, database_url, FILESYNC_HTTP_TOKEN=TOKEN, FILESYNC_ROUTES="image/*=bunny",
                       BUNNY_ENDPOINT=fake.url, BUNNY_STORAGE_ZONE=fake.zone, BUNNY_API_KEY=fake.access_key,
                       FILESYNC_CONCURRENCY="1")
        client = Client(daemon.port, TOKEN)
        try:
            assert client.post("/api/run") == (202, {"run": "started"})
            status, body = client.post("/api/run")
            assert status == 409 and body["error"] == "a run is already going"

            def live() -> dict[str, Any] | None:
                runs = client.get("/api/runs?limit=1")[1]["runs"]
                progress = runs[0]["progress"] if runs and runs[0]["status"] == "running" else None
                return runs[0] if progress and progress["bytes_done"] > 0 else None

            run = wait_until(live, 60, "the run to send its first bytes")
            progress = run["progress"]
            assert progress["run_id"] == run["id"] and progress["files_total"] == 2 and progress["files_done"] == 0
            assert 0 < progress["bytes_done"] <= progress["bytes_total"]
            assert progress["bytes_total_estimated"] is True  # one file opened of two
            assert [t["path"] for t in progress["in_flight"]] == ["big-1.png"]
            assert progress["in_flight"][0]["size"] == sizes["big-1"]
            status, one = client.get(f"/api/runs/{run['id']}")
            assert status == 200 and one["status"] == "running" and one["progress"]["files_total"] == 2
            status, body = client.post("/api/run")
            assert status == 409 and body["run_id"] == run["id"]

            fake.gate.set()
            wait_until(lambda: client.get(f"/api/runs/{run['id']}")[1]["status"] != "running", 120, "the run to end")
            status, one = client.get(f"/api/runs/{run['id']}")
            assert (one["status"], one["copied"], one["progress"]) == ("ok", 2, None)
            assert one["bytes"] == sum(sizes.values())
            assert daemon.events("run_requested") and not daemon.events("tick_skipped")

            # The schedule goes on afterwards, and another run can be asked for.
            assert client.post("/api/run") == (202, {"run": "started"})
            wait_until(lambda: len(daemon.events("run_finished")) == 2, 60, "the second run")
            assert client.get("/api/status")[1]["files"]["done"] == 2
        finally:
            fake.gate.set()
            daemon.kill()
    client.assert_no_secrets()


def test_live_progress_arithmetic() -> None:
    """LiveRun on its own, with a clock the test moves: totals, the size estimate, rates and the ETA."""
    from datetime import UTC, datetime

    from filesync.api.live import LiveRun
    from filesync.model import RunSummary

    now = [100.0]
    live = LiveRun(clock=lambda: now[0])
    assert live.snapshot() is None and live.run_id is None
    live.run_started(RunSummary(run_id=7, total_files=4, started_at=datetime(2026, 1, 1, tzinfo=UTC)))
    progress = live.snapshot()
    assert progress is not None
    assert (progress["files_done"], progress["bytes_total"], progress["eta_seconds"]) == (0, None, None)

    live.transfer_started("a", "a.png", "local", 1000)
    live.transfer_progress("a", "local", 400)
    now[0] += 2
    progress = live.snapshot()
    assert progress is not None
    assert progress["bytes_total"] == 4000 and progress["bytes_total_estimated"] is True  # 1 of 4 sizes known
    assert progress["bytes_per_second"] == 200 and progress["eta_seconds"] == (4000 - 400) / 200
    assert progress["in_flight"] == [{"file_id": "a", "path": "a.png", "sink": "local", "size": 1000, "sent": 400}]

    live.transfer_progress("a", "local", 600)
    live.transfer_finished("a", "local", "copied")
    live.file_finished("a", "copied")
    live.file_finished("b", "waiting")
    live.file_finished("b", "failed")  # the end-of-run retry pass finished it again: counted once
    progress = live.snapshot()
    assert progress is not None
    assert progress["files_done"] == 2 and progress["outcomes"] == {"copied": 1, "failed": 1}
    assert progress["in_flight"] == [] and progress["bytes_done"] == 1000

    live.run_finished(RunSummary(run_id=7))
    assert live.snapshot() is None


def test_gate_rules_by_address_and_host() -> None:
    from filesync.api.auth import Gate, is_loopback
    from filesync.api.routing import Access, ApiError

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost", "app.localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com"))

    def status(gate: Gate, access: Access, **headers: str) -> int:
        try:
            gate.check(access, {k.lower(): v for k, v in headers.items()})
        except ApiError as exc:
            return exc.status
        return 200

    local = Gate("127.0.0.1", None)
    assert status(local, Access.READ) == 200 and status(local, Access.READ, Host="[::1]:9090") == 200
    assert status(local, Access.READ, Host="127.0.0.1.nip.io:9090") == 403
    assert status(local, Access.WRITE, Authorization=f"Bearer {TOKEN}") == 403
    assert status(Gate("0.0.0.0", None), Access.READ) == 403
    assert status(Gate("0.0.0.0", None), Access.PUBLIC) == 200
    guarded = Gate("0.0.0.0", TOKEN)
    assert status(guarded, Access.READ, Authorization=f"Bearer {TOKEN}") == 200
    assert status(guarded, Access.WRITE, Authorization=f"bearer  {TOKEN} ") == 200
    assert status(guarded, Access.WRITE, Authorization=f"Bearer {TOKEN}é") == 401
    assert status(guarded, Access.READ) == 401
