"""`filesync demo`: the whole flow on one machine, with no cloud account.

Seeds a local folder (standing in for the bucket) with generated photos, a short video and a PDF,
lists them in a `"File"` table on the embedded PostgreSQL, and runs the real pipeline into a local
destination folder, twice: the second run shows that nothing is copied again.
"""

from __future__ import annotations

import io
import shutil
import struct
from datetime import UTC, datetime

from filesync import logs, pipeline, report
from filesync.app import App
from filesync.ledger import embedded_url, redact_url
from filesync.ledger.embedded import recreate_database, seed_app_table
from filesync.settings import Config, Environment

DEMO_DB = "filesync_demo"


def sample_files() -> dict[str, bytes]:
    """A few real images, a minimal MP4 and a PDF (which is skipped: no route for documents)."""
    from PIL import Image, ImageDraw

    files: dict[str, bytes] = {}
    for name, fmt, color in (("beach.jpg", "JPEG", (30, 144, 255)), ("forest.png", "PNG", (34, 139, 34))):
        img = Image.new("RGB", (640, 480), color)
        draw = ImageDraw.Draw(img)
        for i in range(0, 640, 40):
            draw.line([(i, 0), (640 - i, 480)], fill=(255, 255, 255), width=3)
        buf = io.BytesIO()
        img.save(buf, fmt)
        files[f"2024/06/{name}"] = buf.getvalue()
    files["2024/06/clip.mp4"] = minimal_mp4()
    files["docs/menu.pdf"] = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    return files


def minimal_mp4() -> bytes:
    """An ISO-BMFF container (ftyp + mdat), enough to be recognised as MP4 by its first bytes."""
    ftyp = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    payload = bytes(range(256)) * 64
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + struct.pack(">I", 8 + len(payload)) + b"mdat" + payload


def main(env: Environment) -> int:
    home = Config.load(env).home
    root = home / "demo"
    bucket, destination = root / "bucket", root / "destination"
    shutil.rmtree(root, ignore_errors=True)
    bucket.mkdir(parents=True)
    files = sample_files()
    for key, data in files.items():
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_bytes(data)

    url = recreate_database(embedded_url(home), DEMO_DB)
    taken = datetime(2024, 6, 21, 18, 30, tzinfo=UTC)
    seed_app_table(url, [(f"demo-{n}", key, taken, "43.5528,7.0174") for n, key in enumerate(files, start=1)])

    demo_env = Environment(
        {
            "DATABASE_URL": url,
            "FILESYNC_HOME": str(home),
            "FILESYNC_SOURCE": "local",
            "FILESYNC_SOURCE_DIR": str(bucket),
            "FILESYNC_ROUTES": "image/*=local;video/*=local",
            "FILESYNC_LOCAL_DIR": str(destination),
            "FILESYNC_LOCAL_TEMPLATE": "{kind}/{id}{ext}",
            "FILESYNC_LOG_FILE": str(root / "filesync.log"),
        },
        env_file="/nonexistent/.env",
    )
    logs.configure(demo_env, console=True, console_level="WARNING")  # the story is printed below
    print(f"demo: {len(files)} files in {bucket}, listed in \"File\" on {redact_url(url)}")
    with App.build(demo_env) as app:
        summary = pipeline.run(app)
        print(report.summary_text(summary))
        print("\nwhere each file went:")
        for _, path, state, sink, _, remote_url in app.ledger.destinations():
            where = f"{sink}: {remote_url}" if sink else f"nowhere ({state})"
            print(f"  {path or '-':<22} -> {where}")
        again = pipeline.run(app)
        print(f"\nsecond run: {again.copied} copied, {again.skipped} skipped (nothing is copied twice)")
    print(f"log: {root / 'filesync.log'}")
    return report.exit_code(summary) if summary.failed or summary.retry_later else 0
