"""Issue 13: jobs without an app table. Mirror a whole bucket, and import a public Google Drive folder,
through filesync's own catalog (`FILESYNC_CATALOG=true`): every run scans the source first, then the usual
pipeline copies what is new or changed. Real PostgreSQL, moto's S3 server, the Drive fake on a socket.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from filesync import pipeline
from filesync.app import App
from filesync.scan import scan
from filesync.settings import Environment
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.fakes.gdrive import FakeDrive
from tests.conftest import S3Server
from tests.media import image_bytes

N_OBJECTS = 2000


def jpeg(n: int) -> bytes:
    """A small real JPEG, distinct per n."""
    return image_bytes("JPEG", size=(16, 16), color=(n % 256, (n // 256) % 256, 7))  # type: ignore[arg-type]


def rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query, args).fetchall()]


def app_env(database_url: str, out: Path, **extra: str) -> Environment:
    return Environment({"DATABASE_URL": database_url, "FILESYNC_CATALOG": "true", "FILESYNC_ROUTES": "image/*=local",
                        "FILESYNC_LOCAL_DIR": str(out), "FILESYNC_LOCAL_TEMPLATE": "{path}",
                        "FILESYNC_CONCURRENCY": "8", "FILESYNC_LOG_FILE": os.devnull, **extra}, env_file=os.devnull)


def test_mirror_a_bucket_copies_every_object_once_and_follows_changes(
    tmp_path: Path, database_url: str, s3: S3Server
) -> None:
    client = s3.client()  # type: ignore[no-untyped-call]
    keys = [f"albums/{n % 40:02d}/photo-{n:05d}.jpg" for n in range(N_OBJECTS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=s3.bucket, Key=kv[1], Body=jpeg(kv[0]),
                                                   ContentType="image/jpeg"), enumerate(keys)))
    client.put_object(Bucket=s3.bucket, Key="albums/", Body=b"")  # a folder marker: not a file
    out = tmp_path / "mirror"
    env = app_env(database_url, out, **s3.env(), FILESYNC_ROUTES="image/*=local")

    with App.build(env) as app:
        first = pipeline.run(app)
        assert (first.copied, first.failed, first.skipped) == (N_OBJECTS, 0, 0)
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == sorted(keys)

        before = rows(database_url, "SELECT key, xmin::text FROM filesync.catalog ORDER BY key")
        again = scan(app)
        assert again is not None and (again.listed, again.added, again.changed, again.gone) == (N_OBJECTS, 0, 0, 0)
        assert rows(database_url, "SELECT key, xmin::text FROM filesync.catalog ORDER BY key") == before  # no write
        assert pipeline.run(app).copied == 0

        new_bytes = jpeg(99_999)
        client.put_object(Bucket=s3.bucket, Key=keys[7], Body=new_bytes, ContentType="image/jpeg")
        client.delete_object(Bucket=s3.bucket, Key=keys[8])
        follow = pipeline.run(app)

    assert follow.copied == 1  # the changed object, again; nothing else
    assert (out / keys[7]).read_bytes() == new_bytes
    assert rows(database_url, "SELECT gone FROM filesync.catalog WHERE key = %s", keys[8]) == [(True,)]
    assert rows(database_url, "SELECT count(*) FROM filesync.files") == [(N_OBJECTS,)]


def test_import_a_public_drive_folder_with_dates_and_places(tmp_path: Path, database_url: str) -> None:
    with FakeDrive() as drive, FakeCloudflare(token="cf-drive-token-000") as cf:
        photos: dict[str, bytes] = {}
        for n in range(300):
            path = f"{2019 + n % 3}/trip-{n % 7}/IMG_{n:04d}.jpg"
            photos[path] = jpeg(n)
            drive.add_file(path, photos[path], time=f"{2019 + n % 3}:07:01 12:{n % 60:02d}:00",
                           location=(48.8584, 2.2945 + n / 1000))
        drive.add_workspace_doc("notes/itinerary")
        out = tmp_path / "imported"
        env = app_env(database_url, out, FILESYNC_SOURCE="gdrive", GDRIVE_FOLDER=drive.root_id,
                      GDRIVE_API_KEY=drive.api_key, GDRIVE_API_BASE=drive.url,
                      FILESYNC_ROUTES="image/*=local,cloudflare-images", CLOUDFLARE_ACCOUNT_ID=cf.account_id,
                      CLOUDFLARE_API_TOKEN="cf-drive-token-000", CLOUDFLARE_API_BASE=cf.api_base,
                      FILESYNC_CLOUDFLARE_RPS="500", FILESYNC_CLOUDFLARE_IMAGES_BATCH="false")

        with App.build(env) as app:
            first = pipeline.run(app)
            assert (first.copied, first.failed) == (300, 0)
            rescan = scan(app)
            assert rescan is not None and (rescan.added, rescan.changed, rescan.skipped) == (0, 0, 1)

            drive.add_file("2021/late/IMG_9999.jpg", jpeg(9999), time="2021:12:24 20:00:00")
            later = pipeline.run(app)  # the next scheduled run: scan, then copy what is new

        assert later.copied == 1 and (out / "2021/late/IMG_9999.jpg").read_bytes() == jpeg(9999)
        assert len(cf.stored_images()) == 301
        meta = json.loads((out / "2019/trip-0/IMG_0000.jpg.meta.json").read_text())
        assert meta["dateTaken"].startswith("2019-07-01T12:00:00")
        assert meta["gpsCoordinates"].startswith("48.8584,2.2945")
        assert hashlib.sha256((out / "2020/trip-1/IMG_0001.jpg").read_bytes()).digest() == \
            hashlib.sha256(photos["2020/trip-1/IMG_0001.jpg"]).digest()
        assert rows(database_url, "SELECT count(*) FROM filesync.catalog WHERE skip IS NOT NULL") == [(1,)]


def test_filesync_scan_and_sources_on_the_command_line(tmp_path: Path, database_url: str) -> None:
    import subprocess
    import sys

    src = tmp_path / "folder"
    for n in range(5):
        (src / f"a/{n}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (src / f"a/{n}.jpg").write_bytes(jpeg(n))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "DATABASE_URL": database_url,
           "FILESYNC_CATALOG": "true", "FILESYNC_SOURCE": "local", "FILESYNC_SOURCE_DIR": str(src),
           "FILESYNC_ROUTES": "image/*=local", "FILESYNC_LOCAL_DIR": str(tmp_path / "out"),
           "FILESYNC_LOG_FILE": os.devnull}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "filesync", *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd="/")

    first, again, listed = cli("scan"), cli("scan"), cli("sources")

    assert first.returncode == 0, first.stderr
    assert "scanned 5 object(s): 5 new, 0 changed, 0 gone" in first.stdout
    assert "scanned 5 object(s): 0 new, 0 changed, 0 gone" in again.stdout
    assert {line.split()[0] for line in listed.stdout.splitlines() if not line.startswith(" ")} >= {
        "gdrive", "local", "s3"}
    assert "GDRIVE_API_KEY" in listed.stdout
