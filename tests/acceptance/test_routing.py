"""Issue 4: fan-out to several sinks, each (file, sink) tracked on its own; backfill; `filesync check`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync import pipeline
from filesync.app import App
from filesync.settings import Environment
from filesync.testing.fakes.bunny import FakeBunny
from filesync.testing.fakes.cloudflare import FakeCloudflare
from tests.media import image_bytes

CF_TOKEN = "cf-route-token-SECRET-42"


@pytest.fixture
def bunny() -> Iterator[FakeBunny]:
    with FakeBunny() as fake:
        yield fake  # type: ignore[misc]


def seed(tmp_path: Path, database_url: str, names: list[str]) -> Path:
    src = tmp_path / "bucket"
    src.mkdir()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in names:
            (src / name).write_bytes(image_bytes("JPEG", color="purple"))
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (Path(name).stem, name))
    return src


def env_for(database_url: str, src: Path, out: Path, bunny: FakeBunny, routes: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "FILESYNC_SOURCE": "local",
        "FILESYNC_SOURCE_DIR": str(src),
        "FILESYNC_LOCAL_DIR": str(out),
        "FILESYNC_ROUTES": routes,
        "BUNNY_STORAGE_ZONE": bunny.zone,
        "BUNNY_API_KEY": bunny.access_key,
        "BUNNY_ENDPOINT": bunny.url,
        "FILESYNC_REQUEST_RETRIES": "2",
        "FILESYNC_REQUEST_MAX_WAIT": "0.5",
        "FILESYNC_RETRY_BACKOFF_SECONDS": "0.01",
        "FILESYNC_LOG_FILE": os.devnull,
        **extra,
    }


def run(env: dict[str, str]) -> Any:
    with App.build(Environment(env, env_file=os.devnull)) as app:
        return pipeline.run(app)


def transfers(database_url: str) -> dict[tuple[str, str], tuple[str, int]]:
    with psycopg.connect(database_url) as conn:
        return {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
            "SELECT file_id, sink, state, attempts FROM filesync.transfers")}


def flag(database_url: str, file_id: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute('SELECT "copiedToCloudflare" FROM "File" WHERE id = %s', (file_id,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_fan_out_flag_waits_for_every_sink_and_retry_skips_the_done_one(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    src = seed(tmp_path, database_url, ["pic.jpg"])
    out = tmp_path / "out"
    env = env_for(database_url, src, out, bunny, "image/*=local,bunny")
    bunny.fail_next(503, times=10)  # bunny keeps failing for this whole run

    first = run(env)

    assert first.retry_later == 1 and first.copied == 0
    assert not flag(database_url, "pic")
    assert transfers(database_url)[("pic", "local")][0] == "done"
    assert transfers(database_url)[("pic", "bunny")][0] == "pending"
    assert (out / "pic.jpg").is_file()
    bunny.calm()
    mtime = (out / "pic.jpg").stat().st_mtime_ns
    with psycopg.connect(database_url, autocommit=True) as conn:  # due now rather than after the backoff
        conn.execute("UPDATE filesync.files SET next_attempt_at = now()")

    second = run(env)

    assert second.copied == 1
    assert flag(database_url, "pic")
    assert transfers(database_url)[("pic", "local")] == ("done", 1)  # not re-sent
    assert (out / "pic.jpg").stat().st_mtime_ns == mtime
    assert [o.key for o in bunny.stored()] == ["pic.jpg"]


def test_adding_a_sink_backfills_copied_files_without_resending(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    src = seed(tmp_path, database_url, ["one.jpg", "two.jpg"])
    out = tmp_path / "out"
    assert run(env_for(database_url, src, out, bunny, "image/*=local")).copied == 2
    assert flag(database_url, "one") and flag(database_url, "two")
    local_files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    summary = run(env_for(database_url, src, out, bunny, "image/*=local,bunny"))

    assert summary.per_sink == {"bunny": {"copied": 2}}
    assert sorted(o.key for o in bunny.stored()) == ["one.jpg", "two.jpg"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == local_files
    assert all(state == "done" for state, _ in transfers(database_url).values())
    assert run(env_for(database_url, src, out, bunny, "image/*=local,bunny")).per_sink == {}


def test_skipped_type_is_picked_up_when_a_route_appears(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    (src / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', ("doc", "doc.pdf"))
    out = tmp_path / "out"
    assert run(env_for(database_url, src, out, bunny, "image/*=local")).skipped == 1
    assert run(env_for(database_url, src, out, bunny, "image/*=local")).skipped == 0  # not retried every run

    summary = run(env_for(database_url, src, out, bunny, "image/*=local;application/pdf=bunny"))

    assert summary.copied == 1 and flag(database_url, "doc")
    assert [o.key for o in bunny.stored()] == ["doc.pdf"]


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", "check"], env=full, capture_output=True, text=True,
                          timeout=60, cwd="/")


def test_check_reports_each_sink_and_hides_secrets(tmp_path: Path, database_url: str, bunny: FakeBunny) -> None:
    with FakeCloudflare(token=CF_TOKEN) as cf:
        src = seed(tmp_path, database_url, [])
        base = env_for(database_url, src, tmp_path / "out", bunny,
                       "image/*=cloudflare-images,bunny,local;video/*=cloudflare-stream",
                       CLOUDFLARE_ACCOUNT_ID=cf.account_id, CLOUDFLARE_API_BASE=cf.api_base)  # type: ignore[attr-defined]

        good = _check({**base, "CLOUDFLARE_API_TOKEN": CF_TOKEN})
        bad_key = "bunny-WRONG-key-123456"
        bad = _check({**base, "CLOUDFLARE_API_TOKEN": "cf-WRONG-token-987654", "BUNNY_API_KEY": bad_key})

    assert good.returncode == 0, good.stdout + good.stderr
    for name in ("database", "source", "sink cloudflare-images", "sink cloudflare-stream", "sink bunny", "sink local"):
        assert any(line.startswith(name) and " ok" in line for line in good.stdout.splitlines()), good.stdout
    assert bad.returncode == 5
    lines = {line.split("  ")[0].strip(): line for line in bad.stdout.splitlines()}
    assert "FAILED" in lines["sink cloudflare-images"] and "FAILED" in lines["sink bunny"]
    assert "FAILED" in lines["sink cloudflare-stream"] and " ok" in lines["sink local"]
    for secret in ("cf-WRONG-token-987654", bad_key, CF_TOKEN, bunny.access_key):
        assert secret not in bad.stdout + bad.stderr
    assert 'CREATE INDEX CONCURRENTLY ON "File" ("id") WHERE "copiedToCloudflare" IS NOT TRUE' in good.stdout


def test_check_hints_until_the_planner_can_use_a_partial_index(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    """An index `WHERE NOT copied` looks right but cannot serve enqueue's `copied IS NOT TRUE` (NULL is not
    copied either): the hint stays until an index the planner really uses exists."""
    src = seed(tmp_path, database_url, [])
    env = env_for(database_url, src, tmp_path / "out", bunny, "image/*=local")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE INDEX "File_todo" ON "File" (id) WHERE NOT "copiedToCloudflare"')
    unusable = _check(env)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE INDEX "File_due" ON "File" (id) WHERE "copiedToCloudflare" IS NOT TRUE')
    usable = _check(env)

    assert unusable.returncode == 0 and "hint:" in unusable.stdout, unusable.stdout
    assert usable.returncode == 0 and "hint:" not in usable.stdout, usable.stdout


def test_status_shows_the_reason_and_retry_brings_a_parked_file_back(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    src = seed(tmp_path, database_url, ["here.jpg"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', ("late", "late.jpg"))
    env = env_for(database_url, src, tmp_path / "out", bunny, "image/*=local")
    assert run(env).failed == 1

    status = _cli_any(env, "status")
    assert status.returncode == 0
    assert "late  failed after 1 attempt(s)  [not_found] not found in bucket" in status.stdout
    (src / "late.jpg").write_bytes(image_bytes("JPEG"))  # the operator fixes the cause
    assert run(env).copied == 0  # parked: not retried on its own

    retried = _cli_any(env, "retry", "late")

    assert retried.returncode == 0 and "1 file(s) queued again" in retried.stdout
    assert run(env).copied == 1 and flag(database_url, "late")
    assert _cli_any(env, "retry").returncode == 2  # neither ids nor --all: a usage error


def _cli_any(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=60, cwd="/")


def test_transient_failures_back_off_across_runs_then_park_after_max_attempts(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    src = seed(tmp_path, database_url, ["flaky.jpg"])
    env = env_for(database_url, src, tmp_path / "out", bunny, "image/*=bunny", FILESYNC_MAX_ATTEMPTS="2",
                  FILESYNC_RETRY_BACKOFF_SECONDS="3600")
    bunny.fail_next(503, times=1000)

    first = run(env)
    too_soon = run(env)

    assert first.retry_later == 1 and too_soon.retry_later == 0  # backing off: not due again yet
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT state, attempts, error_class, error_status, next_attempt_at > now() + "
                           "interval '50 minutes' FROM filesync.files WHERE file_id = 'flaky'").fetchone()
        assert row == ("pending", 1, "server", 503, True)
        conn.execute("UPDATE filesync.files SET next_attempt_at = now()")

    second = run(env)

    assert second.failed == 1 and second.retry_later == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT state, attempts FROM filesync.files").fetchone() == ("failed", 2)
        conn.execute("UPDATE filesync.files SET next_attempt_at = now()")
    assert run(env).failed == 0 and not flag(database_url, "flaky")  # parked until an operator retries


def _file_state(database_url: str, file_id: str) -> tuple[str, str | None, str | None]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT state, error_class, error FROM filesync.files WHERE file_id = %s",
                           (file_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_a_permanent_refusal_parks_only_its_destination_and_a_transient_one_is_retried(
    tmp_path: Path, database_url: str, bunny: FakeBunny
) -> None:
    """An image over Cloudflare's 12,000 px plus a Bunny 503: the file is not parked under 'server 503'
    with Bunny never retried; Images is parked with its reason, Bunny comes back and lands."""
    src = tmp_path / "bucket"
    src.mkdir()
    (src / "wide.png").write_bytes(image_bytes("PNG", size=(13000, 4)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', ("wide", "wide.png"))
    with FakeCloudflare(token=CF_TOKEN) as cf:
        env = env_for(database_url, src, tmp_path / "out", bunny, "image/*=cloudflare-images,bunny",
                      CLOUDFLARE_ACCOUNT_ID=cf.account_id, CLOUDFLARE_API_TOKEN=CF_TOKEN,
                      CLOUDFLARE_API_BASE=cf.api_base, FILESYNC_CLOUDFLARE_RPS="500",
                      FILESYNC_TRANSFORMS="cloudflare-images=none")  # refused, not fitted
        bunny.fail_next(503, times=10)

        first = run(env)

        assert (first.retry_later, first.failed, first.copied) == (1, 0, 0)
        assert transfers(database_url)[("wide", "cloudflare-images")][0] == "failed"
        assert transfers(database_url)[("wide", "bunny")][0] == "pending"
        assert _file_state(database_url, "wide")[:2] == ("pending", "server")
        bunny.calm()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE filesync.files SET next_attempt_at = now()")

        second = run(env)

        assert second.per_sink == {"bunny": {"copied": 1}}  # Images was not tried again
        assert [o.key for o in bunny.stored()] == ["wide.png"]
        assert cf.stored_images() == []
        state, error_class, error = _file_state(database_url, "wide")
        assert (state, error_class) == ("failed", "invalid") and "12000 px" in (error or "")
        assert not flag(database_url, "wide")  # one destination does not hold it: no flag
