"""The newcomer's first command: `filesync demo` on embedded defaults, no cloud account, no DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_copies_samples_into_a_local_folder_and_skips_the_pdf(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "FILESYNC_HOME": str(tmp_path / "home")}

    try:
        result = subprocess.run([sys.executable, "-m", "filesync", "demo"], env=env, capture_output=True,
                                text=True, timeout=240, cwd=tmp_path)
    finally:
        _stop_embedded(tmp_path / "home" / "pgdata")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 copied, 1 skipped, 0 failed" in result.stdout
    assert "second run: 0 copied" in result.stdout
    destination = tmp_path / "home" / "demo" / "destination"
    copied = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*")
                    if p.is_file() and not p.name.endswith(".meta.json"))
    assert copied == ["image/demo-1.jpg", "image/demo-2.png", "video/demo-3.mp4"]
    bucket = tmp_path / "home" / "demo" / "bucket"
    assert (destination / "image" / "demo-1.jpg").read_bytes() == (bucket / "2024/06/beach.jpg").read_bytes()


def _stop_embedded(data: Path) -> None:
    """The demo leaves its embedded PostgreSQL running for the next command; a test should not."""
    if data.is_dir():
        import pgserver

        pgserver.get_server(str(data), cleanup_mode="stop").cleanup()  # type: ignore[attr-defined]
