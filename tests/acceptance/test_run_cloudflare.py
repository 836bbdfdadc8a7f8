"""Issue 2 end to end: the app's "File" table -> S3 (moto server) -> Cloudflare Images and Stream (fakes).

The runs use the real CLI as a subprocess where exit codes, stderr and kills matter, and the pipeline
in-process elsewhere; every service is reached over a real socket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from filesync import pipeline
from filesync.app import App
from filesync.settings import Environment
from filesync.testing.fakes.cloudflare import FakeCloudflare
from tests.conftest import S3Server, cloudflare_env
from tests.media import image_bytes, video_bytes

MiB = 1024 * 1024
TOKEN = "cf-token-0xDEADBEEF-secret"


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare(token=TOKEN) as fake:
        yield fake  # type: ignore[misc]


def base_env(database_url: str, s3: S3Server, cf: FakeCloudflare, **extra: str) -> dict[str, str]:
    defaults = {"FILESYNC_CLOUDFLARE_RPS": "500", "FILESYNC_REQUEST_MAX_WAIT": "2", "FILESYNC_WORKER_ID": "test"}
    return cloudflare_env(database_url, s3, cf, TOKEN, **{**defaults, **extra})


def add_rows(url: str, rows: list[tuple[str, str | None]], date: str | None = "2024-06-21T18:30:00+00:00",
             gps: str | None = "48.8584,2.2945") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for file_id, path in rows:
            conn.execute('INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates") VALUES (%s, %s, %s, %s)',
                         (file_id, path, date, gps))


def flags(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] for r in conn.execute('SELECT id, "copiedToCloudflare" FROM "File"')}


def ledger_rows(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT file_id, state, error_class, error_status, error, attempts, claimed_by "
                           "FROM filesync.files")
        cols = [d.name for d in cur.description or ()]
        return {r[0]: dict(zip(cols, r, strict=True)) for r in cur}


def run_inprocess(env: dict[str, str]) -> Any:
    with App.build(Environment(env, env_file=os.devnull)) as app:
        return pipeline.run(app)


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def test_mixed_batch_lands_with_metadata_and_flags(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    s3.put("photos/a.jpg", image_bytes("JPEG"), "image/jpeg")
    s3.put("photos/b.png", image_bytes("PNG"), "image/png")
    s3.put("photos/c.heic", image_bytes("HEIC"), "image/heic")
    s3.put("videos/d.mp4", video_bytes(2 * MiB), "video/mp4")
    s3.put("videos/e.mov", video_bytes(1 * MiB, b"qt  "), "video/quicktime")
    s3.put("docs/f.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf")
    s3.put("uploads/g", image_bytes("JPEG", color="orange"))  # no extension, no Content-Type
    add_rows(database_url, [("a", "photos/a.jpg"), ("b", "photos/b.png"), ("c", "photos/c.heic"),
                            ("d", "videos/d.mp4"), ("e", "videos/e.mov"), ("f", "docs/f.pdf"),
                            ("g", "uploads/g")])

    result = cli(base_env(database_url, s3, cf), "run")

    assert result.returncode == 0, result.stderr + result.stdout
    assert flags(database_url) == {"a": True, "b": True, "c": True, "d": True, "e": True, "f": False, "g": True}
    assert sorted(i.key for i in cf.stored_images()) == ["a", "b", "c", "g"]
    meta = cf.image("a").meta  # type: ignore[union-attr]
    assert meta["dateTaken"].startswith("2024-06-21T18:30:00")
    assert meta["gpsCoordinates"] == "48.8584,2.2945"
    assert meta["path"] == "photos/a.jpg"
    videos = cf.videos(include_pending=False)
    assert sorted(v.meta.get("name") for v in videos) == ["d", "e"]
    assert {v.meta.get("path") for v in videos} == {"videos/d.mp4", "videos/e.mov"}
    rows = ledger_rows(database_url)
    assert rows["f"]["state"] == "skipped" and "application/pdf" in rows["f"]["error"]
    with psycopg.connect(database_url) as conn:
        stream_ids = {r[0]: r[1] for r in conn.execute(
            "SELECT file_id, remote_id FROM filesync.transfers WHERE sink = 'cloudflare-stream'")}
    assert set(stream_ids) == {"d", "e"}
    assert {cf.video(uid).meta.get("name") for uid in stream_ids.values()} == {"d", "e"}  # type: ignore[union-attr]
    assert "1 skipped" in result.stdout and "exit code 0" in result.stdout


def test_second_run_uploads_nothing(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    s3.put("a.jpg", image_bytes("JPEG"), "image/jpeg")
    s3.put("v.mp4", video_bytes(1 * MiB), "video/mp4")
    s3.put("x.pdf", b"%PDF-1.4\n", "application/pdf")
    add_rows(database_url, [("a", "a.jpg"), ("v", "v.mp4"), ("x", "x.pdf")])
    env = base_env(database_url, s3, cf)
    first = run_inprocess(env)
    assert (first.copied, first.skipped, first.failed) == (2, 1, 0)
    posts_before = len(cf.requests_to("POST"))

    second = run_inprocess(env)

    assert (second.copied, second.skipped, second.failed) == (0, 0, 0)
    assert len(cf.requests_to("POST")) == posts_before
    assert len(cf.stored_images()) == 1 and len(cf.videos()) == 1


def test_transient_errors_are_retried_and_a_4xx_is_recorded(
    database_url: str, s3: S3Server, cf: FakeCloudflare
) -> None:
    for n in range(1, 4):
        s3.put(f"{n}.jpg", image_bytes("JPEG", color="navy"), "image/jpeg")
    add_rows(database_url, [("1", "1.jpg"), ("2", "2.jpg"), ("3", "3.jpg")])
    env = base_env(database_url, s3, cf, FILESYNC_CONCURRENCY="1")
    images = f"{cf.base_path}/images/v1"
    # File 1 (claimed first) meets a 400; then 503, 429 and 524 hit the next requests and are retried.
    cf.fail_next(400, method="POST", path_contains=images,
                 body=json.dumps({"success": False, "errors": [{"code": 5400, "message": "Bad request: image"}],
                                  "messages": [], "result": None}).encode())
    cf.fail_next(503, method="POST", path_contains=images)
    cf.fail_next(429, method="POST", path_contains=images, headers={"Retry-After": "1"})
    cf.fail_next(524, method="POST", path_contains=images)

    summary = run_inprocess(env)

    assert (summary.copied, summary.failed) == (2, 1)
    assert flags(database_url) == {"1": False, "2": True, "3": True}
    row = ledger_rows(database_url)["1"]
    assert (row["state"], row["error_class"], row["error_status"]) == ("failed", "client", 400)
    assert "Bad request" in row["error"]
    statuses = [r.status for r in cf.requests_to("POST", images)]
    assert statuses.count(503) == 1 and statuses.count(429) == 1 and statuses.count(524) == 1
    assert len(cf.stored_images()) == 2


def test_missing_object_fails_with_reason_and_run_goes_on(
    database_url: str, s3: S3Server, cf: FakeCloudflare
) -> None:
    s3.put("here.jpg", image_bytes("JPEG"), "image/jpeg")
    add_rows(database_url, [("gone", "not/there.jpg"), ("here", "here.jpg")])

    result = cli(base_env(database_url, s3, cf), "run")

    assert result.returncode == 1
    row = ledger_rows(database_url)["gone"]
    assert row["state"] == "failed" and row["error"] == "not found in bucket"
    assert flags(database_url) == {"gone": False, "here": True}
    assert "not found in bucket" in result.stdout


def test_missing_setting_exits_2_naming_the_variable(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    env = base_env(database_url, s3, cf)
    del env["CLOUDFLARE_API_TOKEN"]

    result = cli(env, "run")

    assert result.returncode == 2
    assert "CLOUDFLARE_API_TOKEN" in result.stderr
    with psycopg.connect(database_url) as conn:  # nothing was done: not even the ledger's schema
        assert conn.execute("SELECT to_regnamespace('filesync')").fetchone() == (None,)


def test_unreachable_database_and_bucket_have_their_own_exit_codes(
    database_url: str, s3: S3Server, cf: FakeCloudflare
) -> None:
    bad_db = base_env("postgresql://nobody:pw@127.0.0.1:9/none", s3, cf)
    assert cli(bad_db, "run").returncode == 3
    bad_bucket = base_env(database_url, s3, cf, SPACES_ENDPOINT="http://127.0.0.1:9")
    result = cli(bad_bucket, "run")
    assert result.returncode == 4, result.stderr


def _wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_video_then_rerun_resumes(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    size = 24 * MiB
    s3.put("big.mp4", video_bytes(size), "video/mp4")
    add_rows(database_url, [("big", "big.mp4")])
    env = base_env(database_url, s3, cf)
    cf.slow_next(1.5, method="PATCH", times=100)  # every chunk takes a while: time to kill mid-upload
    full = {"PATH": os.environ.get("PATH", ""), **env}
    proc = subprocess.Popen([sys.executable, "-m", "filesync", "run", "-q"], env=full, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: cf.patch_bytes_total >= 10 * MiB, what="two chunks to arrive")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    first_bytes = cf.patch_bytes_total
    assert first_bytes < size
    assert flags(database_url) == {"big": False}
    cf.calm()

    result = cli(env, "run")

    assert result.returncode == 0, result.stdout + result.stderr
    second_bytes = cf.patch_bytes_total - first_bytes
    assert 0 < second_bytes < size  # resumed, not started over
    assert len(cf.videos()) == 1  # one video at Stream, not two
    assert cf.stored_videos()[0].size == size
    assert flags(database_url) == {"big": True}
    assert ledger_rows(database_url)["big"]["claimed_by"] is None


def test_kill_after_image_upload_before_marking(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    s3.put("a.jpg", image_bytes("JPEG"), "image/jpeg")
    add_rows(database_url, [("a", "a.jpg")])
    env = base_env(database_url, s3, cf)
    # Cloudflare stores the image, but its answer is held back: the process dies before it can mark.
    cf.hold_response_next(30, method="POST", path_contains="/images/v1")
    full = {"PATH": os.environ.get("PATH", ""), **env}
    proc = subprocess.Popen([sys.executable, "-m", "filesync", "run", "-q"], env=full, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: cf.image("a") is not None, what="the image to be stored")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert flags(database_url) == {"a": False}
    cf.calm()

    result = cli(env, "run")

    assert result.returncode == 0, result.stdout + result.stderr
    assert flags(database_url) == {"a": True}
    assert len(cf.stored_images()) == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT remote_id FROM filesync.transfers WHERE file_id = 'a'").fetchone() == ("a",)


def test_image_over_cloudflare_limits_fails_before_any_upload(
    database_url: str, s3: S3Server, cf: FakeCloudflare
) -> None:
    """With fitting switched off (FILESYNC_TRANSFORMS; it is on by default, see test_transforms_e2e)."""
    s3.put("wide.png", image_bytes("PNG", size=(13000, 4)), "image/png")
    s3.put("ok.png", image_bytes("PNG"), "image/png")
    add_rows(database_url, [("wide", "wide.png"), ("ok", "ok.png")])

    summary = run_inprocess(base_env(database_url, s3, cf, FILESYNC_TRANSFORMS="cloudflare-images=none"))

    assert (summary.copied, summary.failed) == (1, 1)
    row = ledger_rows(database_url)["wide"]
    assert row["state"] == "failed" and row["error_class"] == "invalid"
    assert "13000x4 px is over the limit of 12000 px" in row["error"]
    assert [i.key for i in cf.stored_images()] == ["ok"]
    assert len(cf.requests_to("POST", "/images/v1")) == 1


def test_each_run_is_recorded(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    s3.put("a.jpg", image_bytes("JPEG"), "image/jpeg")
    s3.put("b.pdf", b"%PDF-1.4\n", "application/pdf")
    add_rows(database_url, [("a", "a.jpg"), ("b", "b.pdf"), ("c", "missing.jpg")])

    summary = run_inprocess(base_env(database_url, s3, cf))

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, copied, skipped, failed, bytes, host, finished_at >= started_at "
                           "FROM filesync.runs WHERE id = %s", (summary.run_id,)).fetchone()
    assert row is not None
    assert row[:5] == ("failed", 1, 1, 1, summary.bytes) and summary.bytes > 0
    assert row[5] and row[6] is True


def test_sinks_command_lists_every_sink_with_its_settings() -> None:
    result = subprocess.run([sys.executable, "-m", "filesync", "sinks"], capture_output=True, text=True,
                            timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0
    for name in ("cloudflare-images", "cloudflare-stream", "bunny", "cloudinary", "s3", "local"):
        assert any(line.startswith(name + "  ") for line in result.stdout.splitlines()), name
    token_line = next(line for line in result.stdout.splitlines() if "CLOUDFLARE_API_TOKEN" in line)
    assert "required" in token_line and "secret" in token_line


def test_a_stalled_transfer_lets_its_lease_lapse_and_its_late_mark_is_refused(
    database_url: str, s3: S3Server, cf: FakeCloudflare
) -> None:
    import threading

    from filesync.ledger import Database, PostgresLedger

    s3.put("slow.jpg", image_bytes("JPEG"), "image/jpeg")
    add_rows(database_url, [("slow", "slow.jpg")])
    env = base_env(database_url, s3, cf, FILESYNC_LEASE_SECONDS="2", FILESYNC_HTTP_TIMEOUT="30")
    cf.slow_next(8, method="POST", path_contains="/images/v1")  # no sign of life for 8 s
    results: list[Any] = []
    stalled = threading.Thread(target=lambda: results.append(run_inprocess(env)))
    stalled.start()
    config = App.build(Environment(env, env_file=os.devnull)).config
    other = PostgresLedger(Database(database_url), "filesync", config.app)
    try:
        deadline = time.monotonic() + 20
        taken: list[Any] = []
        while not taken and time.monotonic() < deadline:
            time.sleep(0.5)
            taken = other.claim("other@elsewhere/1", limit=1, lease_seconds=60)
        assert [t.file_id for t in taken] == ["slow"]  # another worker could take the stalled file over
        stalled.join(timeout=60)
        assert results and results[0].copied == 0  # the stalled worker's late result was not recorded
        assert flags(database_url) == {"slow": False}
        other.release("other@elsewhere/1")
    finally:
        other.close()

    assert run_inprocess(env).copied == 1  # the next run marks it: the image already exists (5409)
    assert flags(database_url) == {"slow": True} and len(cf.stored_images()) == 1


def test_errors_on_stderr_never_show_secrets(database_url: str, s3: S3Server, cf: FakeCloudflare) -> None:
    password = "Pw-0xFEEDFACE-never-print"
    env = base_env(f"postgresql://nobody:{password}@127.0.0.1:9/none", s3, cf)

    result = cli(env, "run")

    assert result.returncode == 3 and "database unavailable" in result.stderr
    for secret in (password, TOKEN, env["SPACES_SECRET"]):
        assert secret not in result.stderr + result.stdout
