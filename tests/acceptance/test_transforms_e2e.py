"""Issue 14 end to end: images the Images API would refuse are fitted on the way, upright, with their metadata;
a decompression bomb is failed with its reason; the ledger records the derivation; a second run sends
nothing; a destination with no transform gets the original bytes. Moto's S3, the Images fake, real PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from PIL import Image

from filesync import pipeline
from filesync.app import App
from filesync.settings import Environment
from filesync.testing.fakes.cloudflare import FakeCloudflare
from tests.conftest import S3Server, cloudflare_env
from tests.unit.test_transforms import BLUE, RED, camera_exif, encode, marked, png_header_only

TOKEN = "cf-fit-token-0000"
TEN_MB = 10_000_000


def noisy_png(size: tuple[int, int]) -> bytes:
    """Random pixels: a PNG that does not compress below its raw size (about 3 bytes a pixel)."""
    rng = random.Random(14)
    return encode(Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)), "PNG")


def originals() -> dict[str, tuple[bytes, str]]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    frames = [Image.new("RGB", (200, 100), c) for c in (RED, (0, 255, 0), BLUE)]
    return {
        "wide": (encode(Image.new("RGB", (13_000, 300), BLUE), "JPEG", quality=80), "image/jpeg"),
        "big": (noisy_png((2_200, 2_200)), "image/png"),
        "phone": (encode(marked((400, 300)), "HEIF", exif=camera_exif(orientation=6)), "image/heic"),
        "scan": (encode(marked((300, 200)), "TIFF"), "image/tiff"),
        "anim": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
                 "image/gif"),
        "bomb": (png_header_only(30_000, 30_000), "image/png"),
    }


def image_at(cf: FakeCloudflare, image_id: str) -> bytes:
    stored = cf._images[image_id]  # type: ignore[attr-defined]  # the fake keeps each image in a file
    return Path(stored.path).read_bytes()


def test_images_are_fitted_and_compressed_for_images_and_sent_as_they_are_elsewhere(
    tmp_path: Path, database_url: str, s3: S3Server
) -> None:
    files = originals()
    assert len(files["big"][0]) > TEN_MB  # over Cloudflare's byte limit, as the 14 MB PNG
    ext = {"image/jpeg": ".jpg", "image/png": ".png", "image/heic": ".heic", "image/tiff": ".tif",
           "image/gif": ".gif"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for file_id, (data, mime) in files.items():
            s3.put(f"in/{file_id}{ext[mime]}", data, mime)
            conn.execute('INSERT INTO "File" (id, path, "dateTaken", "gpsCoordinates") VALUES (%s, %s, %s, %s)',
                         (file_id, f"in/{file_id}{ext[mime]}", "2024-05-01T10:00:00+00:00", "48.8567,2.3508"))
    out = tmp_path / "originals"
    with FakeCloudflare(token=TOKEN) as cf:
        env = cloudflare_env(database_url, s3, cf, TOKEN, FILESYNC_CLOUDFLARE_RPS="500",
                             FILESYNC_ROUTES="image/*=cloudflare-images,local", FILESYNC_LOCAL_DIR=str(out),
                             FILESYNC_LOCAL_TEMPLATE="{id}{ext}", FILESYNC_CLOUDFLARE_IMAGES_BATCH="false",
                             # a compression profile: JPEG for all but GIFs, each still fitted to the limits
                             FILESYNC_TRANSFORMS="cloudflare-images=jpeg:q=85")
        with App.build(Environment(env, env_file=os.devnull)) as app:
            first = pipeline.run(app)
            second = pipeline.run(app)

        assert (first.copied, first.failed) == (5, 1), first.failures
        assert second.per_sink == {} and second.copied == 0  # nothing sent twice
        stored = {i.key: i for i in cf.stored_images()}
        assert sorted(stored) == ["anim", "big", "phone", "scan", "wide"]
        for file_id in stored:
            data = image_at(cf, file_id)
            assert len(data) <= TEN_MB
            with Image.open(io.BytesIO(data)) as im:
                assert max(im.size) <= 12_000 and im.size[0] * im.size[1] <= 100_000_000
                assert Image.MIME[im.format] in {"image/jpeg", "image/png", "image/gif", "image/webp"}
            assert json.loads(json.dumps(stored[file_id].metadata)).get("dateTaken", "").startswith("2024-05-01")
        with Image.open(io.BytesIO(image_at(cf, "phone"))) as phone:  # HEIC -> JPEG, turned upright
            assert phone.format == "JPEG" and phone.size == (300, 400)
            red = phone.convert("RGB").getpixel((phone.width - 5, 5))
            assert red[0] > 200 and red[2] < 80  # the stored top-left corner is now top-right
        with Image.open(io.BytesIO(image_at(cf, "anim"))) as anim:
            assert getattr(anim, "n_frames", 1) == 3

    # The local folder asked for no transform: every original, byte for byte (the bomb included).
    for file_id, (data, mime) in files.items():
        assert (out / f"{file_id}{ext[mime]}").read_bytes() == data
    with psycopg.connect(database_url) as conn:
        derived: dict[str, Any] = dict(conn.execute(
            "SELECT file_id, derivation FROM filesync.transfers WHERE sink = 'cloudflare-images' "
            "AND derivation IS NOT NULL").fetchall())
        untouched = conn.execute("SELECT count(*) FROM filesync.transfers WHERE sink = 'local' "
                                 "AND derivation IS NOT NULL").fetchone()
        bomb = conn.execute("SELECT state, error FROM filesync.files WHERE file_id = 'bomb'").fetchone()
    assert untouched == (0,)
    assert derived["wide"]["original"]["width"] == 13_000 and derived["wide"]["sent"]["width"] <= 12_000
    assert derived["big"]["original"]["size"] > TEN_MB >= derived["big"]["sent"]["size"]
    assert derived["phone"]["original"]["mime"] == "image/heic" and derived["phone"]["sent"]["mime"] == "image/jpeg"
    assert bomb is not None and bomb[0] == "failed" and "decompression bomb" in bomb[1]

    # `filesync report` shows the derivation beside each copy.
    report = subprocess.run([sys.executable, "-m", "filesync", "report", "--csv"], env=env, capture_output=True,
                            text=True, timeout=120, cwd="/")
    assert report.returncode == 0, report.stderr
    rows = {(r["file_id"], r["destination"]): r for r in csv.DictReader(io.StringIO(report.stdout))}
    assert rows[("wide", "cloudflare-images")]["derived"] == "jpeg 13000x300→12000x277 jpeg q=85"
    assert int(rows[("big", "cloudflare-images")]["original_bytes"]) == len(files["big"][0])
    assert rows[("wide", "local")]["derived"] == ""  # the original, as it is


def test_fit_is_the_default_for_cloudflare_images(tmp_path: Path, database_url: str, s3: S3Server) -> None:
    """No FILESYNC_TRANSFORMS: the 13,000 px photo is resized instead of parked; a small JPEG goes as it is."""
    wide, small = originals()["wide"][0], encode(Image.new("RGB", (64, 48), RED), "JPEG")
    s3.put("wide.jpg", wide, "image/jpeg")
    s3.put("small.jpg", small, "image/jpeg")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s), (%s, %s)', ("wide", "wide.jpg", "small",
                                                                               "small.jpg"))
    with FakeCloudflare(token=TOKEN) as cf:
        env = cloudflare_env(database_url, s3, cf, TOKEN, FILESYNC_CLOUDFLARE_RPS="500",
                             FILESYNC_CLOUDFLARE_IMAGES_BATCH="false")
        with App.build(Environment(env, env_file=os.devnull)) as app:
            summary = pipeline.run(app)

        assert (summary.copied, summary.failed) == (2, 0)
        with Image.open(io.BytesIO(image_at(cf, "wide"))) as im:
            assert im.size == (12_000, 277)
        assert image_at(cf, "small") == small  # within the limits: the original bytes


def test_a_changed_transform_resends_nothing_until_retry_asks(tmp_path: Path, database_url: str, s3: S3Server) -> None:
    photo = encode(Image.new("RGB", (64, 48), RED), "JPEG")
    s3.put("p.jpg", photo, "image/jpeg")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', ("p", "p.jpg"))
    with FakeCloudflare(token=TOKEN) as cf:
        env = cloudflare_env(database_url, s3, cf, TOKEN, FILESYNC_CLOUDFLARE_RPS="500",
                             FILESYNC_CLOUDFLARE_IMAGES_BATCH="false")
        webp = {**env, "FILESYNC_TRANSFORMS": "cloudflare-images=webp:q=70"}
        with App.build(Environment(env, env_file=os.devnull)) as app:
            assert pipeline.run(app).copied == 1
        with App.build(Environment(webp, env_file=os.devnull)) as app:
            assert pipeline.run(app).per_sink == {}  # the setting changed: nothing is re-sent by itself
        assert image_at(cf, "p") == photo

        asked = subprocess.run([sys.executable, "-m", "filesync", "retry", "--sink", "cloudflare-images", "--all"],
                               env=webp, capture_output=True, text=True, timeout=120, cwd="/")
        assert asked.returncode == 0, asked.stderr
        with App.build(Environment(webp, env_file=os.devnull)) as app:
            again = pipeline.run(app)

        assert again.per_sink == {"cloudflare-images": {"copied": 1}}
        with Image.open(io.BytesIO(image_at(cf, "p"))) as im:
            assert im.format == "WEBP"  # replaced under the same id, with the new profile
        assert len(cf.stored_images()) == 1
