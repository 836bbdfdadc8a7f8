"""Issue 9: the promise under faults a transport-level soak never exercises.

A setup problem (a wrong token) stops its destination without parking the backlog; two files that map to
one destination name never overwrite each other; a changed row is copied again with its new bytes; dates
do not depend on the database's DateStyle; a destination that echoes its key leaks it nowhere; rows with
no id are reported. Real PostgreSQL, moto's S3 server, the fakes over real sockets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync.testing.fakes.bunny import FakeBunny
from filesync.testing.fakes.cloudflare import FakeCloudflare
from tests.acceptance.test_routing import env_for, run
from tests.conftest import S3Server, cloudflare_env
from tests.media import image_bytes

TOKEN = "cf-promise-token-SECRET-77"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-m", "filesync", *args], env=full, capture_output=True, text=True,
                          timeout=120, cwd="/")


def rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query, args).fetchall()]


def execute(url: str, query: str, *args: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query, args)


def bucket(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "bucket"
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    src.mkdir(exist_ok=True)
    return src


# --- a whole-system problem does not park the backlog ----------------------------------------------------


def test_a_wrong_token_stops_the_destination_and_the_right_one_copies_everything(
    database_url: str, s3: S3Server
) -> None:
    ids = [f"p{n}" for n in range(6)]
    for n, file_id in enumerate(ids):
        s3.put(f"{file_id}.jpg", image_bytes("JPEG", color=(n * 40, 10, 10)), "image/jpeg")  # type: ignore[arg-type]
    execute(database_url, 'INSERT INTO "File" (id, path) SELECT x, x || \'.jpg\' FROM unnest(%s::text[]) AS x', ids)
    with FakeCloudflare(token=TOKEN) as cf:
        wrong = cloudflare_env(database_url, s3, cf, "cf-token-that-expired-0000", FILESYNC_CLOUDFLARE_RPS="500",
                               FILESYNC_CONCURRENCY="1")

        refused = cli(wrong, "run")

        assert refused.returncode == 6, refused.stdout + refused.stderr
        assert "STOPPED cloudflare-images" in refused.stdout and "CLOUDFLARE_API_TOKEN" in refused.stdout
        assert "cf-token-that-expired-0000" not in refused.stdout + refused.stderr
        files = rows(database_url, "SELECT state, attempts FROM filesync.files")
        assert files == [("pending", 0)] * len(ids)  # nothing parked, no attempt burnt
        uploads = cf.requests_to("POST", "/images/v1")
        assert len(uploads) == 1  # the circuit opened at the first refusal

        fixed = cli({**wrong, "CLOUDFLARE_API_TOKEN": TOKEN}, "run")

        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert sorted(o.key for o in cf.stored_images()) == ids
        assert rows(database_url, 'SELECT count(*) FROM "File" WHERE "copiedToCloudflare"') == [(len(ids),)]


# --- the flag means the destination holds the current file ---------------------------------------------


@pytest.mark.parametrize("destination", ["local", "bunny"])
def test_two_files_mapping_to_one_name_never_overwrite_each_other(
    tmp_path: Path, database_url: str, destination: str
) -> None:
    first, second = image_bytes("JPEG", color="red"), image_bytes("JPEG", color="blue")
    src = bucket(tmp_path, {"a/pic.jpg": first, "b/pic.jpg": second, "c/other.jpg": first})
    execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s), (%s, %s), (%s, %s)',
            "a", "a/pic.jpg", "b", "b/pic.jpg", "c", "c/other.jpg")
    out = tmp_path / "out"
    with FakeBunny() as bunny:
        env = env_for(database_url, src, out, bunny, f"image/*={destination}", FILESYNC_LOCAL_TEMPLATE="{name}",
                      BUNNY_TEMPLATE="{name}", FILESYNC_CONCURRENCY="1")

        summary = run(env)

        assert (summary.copied, summary.failed) == (2, 1)
        [(owner,)] = rows(database_url, "SELECT file_id FROM filesync.names WHERE name = 'pic.jpg'")
        loser = "b" if owner == "a" else "a"
        held = (out / "pic.jpg").read_bytes() if destination == "local" else bunny.read("pic.jpg")
        assert held == (first if owner == "a" else second)  # the owner's bytes, not overwritten
        [(state, error)] = rows(database_url, "SELECT state, error FROM filesync.files WHERE file_id = %s", loser)
        assert state == "failed" and f"file {owner}" in error and f"file {loser}" in error
        flags = dict(rows(database_url, 'SELECT id, "copiedToCloudflare" FROM "File"'))
        assert flags == {owner: True, loser: False, "c": True}


def test_ids_that_map_to_one_name_through_the_extension_collide_cleanly(tmp_path: Path, database_url: str) -> None:
    """`{id}{ext}`: id `x.jpg` with an extensionless key and id `x` with `.jpg` both make `x.jpg`."""
    src = bucket(tmp_path, {"raw/photo": image_bytes("JPEG", color="red"), "y.jpg": image_bytes("JPEG")})
    execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s), (%s, %s)', "x.jpg", "raw/photo", "x", "y.jpg")
    with FakeBunny() as bunny:
        env = env_for(database_url, src, tmp_path / "out", bunny, "image/*=local", FILESYNC_CONCURRENCY="1")

        summary = run(env)

        assert (summary.copied, summary.failed) == (1, 1)
        assert "maps to the same name" in summary.failures[0][2]


def test_a_changed_path_and_a_reset_flag_are_copied_again_at_once_with_the_new_bytes(
    tmp_path: Path, database_url: str
) -> None:
    old, new, newer = (image_bytes("JPEG", color=c) for c in ("red", "green", "blue"))
    src = bucket(tmp_path, {"v1.jpg": old})
    execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "f", "v1.jpg")
    out = tmp_path / "out"
    with FakeBunny() as bunny:
        env = env_for(database_url, src, out, bunny, "image/*=local,bunny")
        assert run(env).copied == 1
        assert (out / "f.jpg").read_bytes() == old

        # The app stores a new version under a new key and resets its flag, right after the mark.
        (src / "v2.jpg").write_bytes(new)
        execute(database_url, 'UPDATE "File" SET path = %s, "copiedToCloudflare" = false WHERE id = %s', "v2.jpg", "f")
        moved = run(env)

        assert moved.copied == 1
        assert (out / "f.jpg").read_bytes() == new and bunny.read("f.jpg") == new
        assert rows(database_url, 'SELECT "copiedToCloudflare" FROM "File"') == [(True,)]

        # Same key, new bytes: only the flag is reset.
        (src / "v2.jpg").write_bytes(newer)
        execute(database_url, 'UPDATE "File" SET "copiedToCloudflare" = false WHERE id = %s', "f")
        reset = run(env)

        assert reset.copied == 1
        assert (out / "f.jpg").read_bytes() == newer and bunny.read("f.jpg") == newer
        assert rows(database_url, 'SELECT "copiedToCloudflare" FROM "File"') == [(True,)]


# --- dates, ids, secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["SQL, DMY", "German", "Postgres, MDY"])
def test_dates_do_not_depend_on_the_database_datestyle(tmp_path: Path, database_url: str, style: str) -> None:
    src = bucket(tmp_path, {"a.jpg": image_bytes("JPEG"), "b.jpg": image_bytes("JPEG"), "c.jpg": image_bytes("PNG")})
    [(dbname,)] = rows(database_url, "SELECT current_database()")
    execute(database_url, f"ALTER DATABASE \"{dbname}\" SET DateStyle = '{style}'")
    execute(database_url, 'INSERT INTO "File" (id, path, "dateTaken") VALUES (%s, %s, %s), (%s, %s, %s), '
            "(%s, %s, 'infinity')", "a", "a.jpg", "2024-06-21T18:30:00+00:00", "b", "b.jpg",
            "0044-03-15 00:00:00+00 BC", "c", "c.jpg")
    out = tmp_path / "out"
    with FakeBunny() as bunny:
        summary = run(env_for(database_url, src, out, bunny, "image/*=local"))

    assert (summary.copied, summary.failed) == (3, 0)
    meta = {n: json.loads((out / f"{n}.jpg.meta.json").read_text()) for n in ("a", "b")}
    assert meta["a"]["dateTaken"] == "2024-06-21T18:30:00+00:00"
    assert "dateTaken" not in meta["b"]  # a valid timestamp no metadata date can carry: left out, copied
    assert "dateTaken" not in json.loads((out / "c.jpg.meta.json").read_text())


def test_rows_without_an_id_are_counted_and_reported(tmp_path: Path, database_url: str) -> None:
    execute(database_url, 'CREATE TABLE "Photo" (id text, path text, "dateTaken" timestamptz, '
            '"gpsCoordinates" text, "copiedToCloudflare" boolean NOT NULL DEFAULT false)')
    execute(database_url, 'INSERT INTO "Photo" (id, path) VALUES (%s, %s), (NULL, %s), (NULL, %s)',
            "ok", "ok.jpg", "lost.jpg", "gone.jpg")
    src = bucket(tmp_path, {"ok.jpg": image_bytes("JPEG")})
    with FakeBunny() as bunny:
        env = {**env_for(database_url, src, tmp_path / "out", bunny, "image/*=local"),
               "FILESYNC_FILES_TABLE": "Photo"}
        ran = cli(env, "run")
        status = cli(env, "status")

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 row(s) have no id" in ran.stdout
    assert "2 row(s) of the app's table have no id" in status.stdout


def test_a_destination_echoing_its_key_leaks_it_nowhere(tmp_path: Path, database_url: str) -> None:
    src = bucket(tmp_path, {"a.jpg": image_bytes("JPEG")})
    execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "a", "a.jpg")
    log = tmp_path / "filesync.log"
    with FakeBunny() as bunny:
        echo = f'{{"HttpCode": 400, "Message": "invalid request for AccessKey {bunny.access_key}"}}'.encode()
        bunny.fail_next(400, body=echo, times=20, method="PUT")
        env = {**env_for(database_url, src, tmp_path / "out", bunny, "image/*=bunny"),
               "FILESYNC_LOG_FILE": str(log)}

        ran = cli(env, "run")
        status = cli(env, "status")

    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "invalid request for AccessKey" in ran.stdout  # the reason is there, the key is not
    stored = rows(database_url, "SELECT coalesce(error, '') FROM filesync.files UNION ALL "
                  "SELECT coalesce(error, '') FROM filesync.transfers UNION ALL "
                  "SELECT coalesce(error, '') FROM filesync.runs")
    for text in (ran.stdout, ran.stderr, status.stdout, status.stderr, log.read_text(), *(r[0] for r in stored)):
        assert bunny.access_key not in text


# --- no hang ---------------------------------------------------------------------------------------------


def test_a_bucket_endpoint_that_never_answers_ends_the_run_in_bounded_time(database_url: str) -> None:
    """It accepts connections and never says a word: the run ends at FILESYNC_HTTP_TIMEOUT, exit 4."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    env = {"DATABASE_URL": database_url, "FILESYNC_SOURCE": "s3",
           "SPACES_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}", "SPACES_KEY": "k" * 20,
           "SPACES_SECRET": "s" * 40, "SPACES_BUCKET": "media", "FILESYNC_ROUTES": "image/*=local",
           "FILESYNC_LOCAL_DIR": "/tmp/filesync-never", "FILESYNC_HTTP_TIMEOUT": "2", "FILESYNC_LOG_FILE": os.devnull}
    try:
        started = time.monotonic()
        ran = cli(env, "run")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        acceptor.join()  # closing the listener under a blocked accept() raises in the thread (EBADF)
        for conn in held:
            conn.close()
        listener.close()

    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert "did not answer in time" in ran.stderr
    assert elapsed < 60, f"the run took {elapsed:.0f} s against a 2 s timeout"


# --- routes that can never succeed ------------------------------------------------------------------------


@pytest.mark.parametrize(("routes", "why"), [
    ("image/*=cloudflare-stream;video/*=cloudflare-stream", "takes only video"),
    ("image/[=local", "cannot match any MIME type"),
])
def test_routes_that_can_never_succeed_stop_before_any_work(
    tmp_path: Path, database_url: str, routes: str, why: str
) -> None:
    src = bucket(tmp_path, {"a.jpg": image_bytes("JPEG")})
    execute(database_url, 'INSERT INTO "File" (id, path) VALUES (%s, %s)', "a", "a.jpg")
    with FakeCloudflare(token=TOKEN) as cf, FakeBunny() as bunny:
        env = {**env_for(database_url, src, tmp_path / "out", bunny, routes), "CLOUDFLARE_ACCOUNT_ID": cf.account_id,
               "CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_BASE": cf.api_base}
        ran = cli(env, "run")
        assert cf.requests == []

    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "FILESYNC_ROUTES" in ran.stderr and why in ran.stderr
    assert not (tmp_path / "out").exists()
