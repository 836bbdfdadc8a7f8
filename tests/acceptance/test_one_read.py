"""Issue 11: one read per object. Inspection takes its facts and first bytes from the GET that then streams the
object to its destinations, so a small object costs one request to the bucket whatever the number of
destinations, and the inspection finds the same kinds and types as a HEAD plus a ranged read did.
Counted on the wire: a proxy in front of moto's S3 server logs every request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filesync import kinds, pipeline
from filesync.app import App
from filesync.settings import Environment
from tests.conftest import S3Server
from tests.integration.sources.cases.case_s3 import BucketProxy
from tests.media import image_bytes, video_bytes


def samples() -> dict[str, tuple[bytes, str | None]]:
    """key -> (bytes, Content-Type the bucket holds); the last one has neither extension nor type."""
    return {
        "a.jpg": (image_bytes("JPEG"), "image/jpeg"),
        "b.png": (image_bytes("PNG"), "image/png"),
        "c.heic": (image_bytes("HEIC"), "image/heic"),
        "d.webp": (image_bytes("WEBP"), "image/webp"),
        "e.gif": (image_bytes("GIF"), "image/gif"),
        "f.mp4": (video_bytes(40_000), "video/mp4"),
        "g.mov": (video_bytes(40_000, b"qt  "), "video/quicktime"),
        "h.pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "application/pdf"),
        "noext": (image_bytes("JPEG", color="red"), None),
    }


@pytest.fixture
def proxy(s3: S3Server) -> Any:
    fake = BucketProxy(s3)
    fake.start()
    yield fake
    fake.stop()


def test_one_get_per_object_and_the_same_inspection(
    tmp_path: Path, database_url: str, s3: S3Server, proxy: Any
) -> None:
    objects = samples()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for key, (data, content_type) in objects.items():
            s3.put(key, data, content_type)
            conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (key, key))
    env = Environment({**s3.env(), "SPACES_ENDPOINT": proxy.url, "DATABASE_URL": database_url,
                       "FILESYNC_ROUTES": "*/*=local",
                       "FILESYNC_LOCAL_DIR": str(tmp_path / "out"), "FILESYNC_LOG_FILE": os.devnull},
                      env_file=os.devnull)
    with App.build(env) as app:
        before = len(proxy.requests)  # the run's bucket check (HEAD on the bucket) comes first
        summary = pipeline.run(app)

    assert summary.copied == len(objects)
    per_object = [r for r in proxy.requests[before:] if r.path.strip("/") != s3.bucket]
    gets = [r for r in per_object if r.method == "GET"]
    assert not [r for r in per_object if r.method == "HEAD"]  # no HEAD per object any more
    assert len(gets) <= len(objects), [r.path for r in gets]  # one GET each (objects < 256 KiB)
    with psycopg.connect(database_url) as conn:
        seen = {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT file_id, kind, mime, size FROM filesync.files")}
    for key, (data, content_type) in objects.items():
        kind, mime = kinds.detect(key, content_type, data[:kinds.HEAD_BYTES])  # the old inspection's inputs
        assert seen[key] == (str(kind), mime, len(data)), key
    copied = {p.name for p in (tmp_path / "out").iterdir() if not p.name.endswith(".meta.json")}
    assert len(copied) == len(objects)
