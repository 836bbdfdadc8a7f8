"""Issue 9: a bad settings file or setting stops `filesync` with exit 2 and clear lines, never a traceback.

The CLI runs as a subprocess from a folder of the test's own, as an operator runs it: `.env` there, or a
file named by FILESYNC_ENV_FILE. Secrets planted in the settings must not appear in any output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PASSWORD = "pw-0xCONFIGSECRET"


def cli(env: dict[str, str], *args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env}
    return subprocess.run([*prefix, sys.executable, "-m", "filesync", *args], env=full, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings that need no cloud account: the local source and sink, no log file."""
    (tmp_path / "src").mkdir(exist_ok=True)
    return {"FILESYNC_SOURCE": "local", "FILESYNC_SOURCE_DIR": str(tmp_path / "src"), "FILESYNC_ROUTES": "*=local",
            "FILESYNC_LOCAL_DIR": str(tmp_path / "dst"), "FILESYNC_LOG_FILE": os.devnull, **extra}


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *names: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("filesync: configuration error: "), done.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in done.stdout + done.stderr
    return lines[0]


def test_a_missing_file_named_by_filesync_env_file_is_an_error(tmp_path: Path) -> None:
    done = cli({"FILESYNC_ENV_FILE": str(tmp_path / "settings.env")}, "status", cwd=tmp_path)
    assert_one_clear_line(done, "FILESYNC_ENV_FILE", "settings.env", "names no file")


def test_a_missing_file_marked_optional_is_skipped(tmp_path: Path, database_url: str) -> None:
    env = local_env(tmp_path, FILESYNC_ENV_FILE=f"-{tmp_path / 'settings.env'}", DATABASE_URL=database_url)
    done = cli(env, "migrate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def _drop_root_read() -> tuple[str, ...]:
    """A prefix that takes root's power to read any file, so a file without read permission is unreadable
    to the command; none is needed for other users."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: root reads any file")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.mark.parametrize("kind", ["no read permission", "a folder", "not UTF-8"])
def test_an_unreadable_env_file_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    dotenv = tmp_path / ".env"
    prefix: tuple[str, ...] = ()
    if kind == "a folder":  # what Docker makes of a bind mount whose file is missing
        dotenv.mkdir()
        expected = "is a folder"
    elif kind == "not UTF-8":
        dotenv.write_bytes(b"DATABASE_URL=postgresql://app:\xff\xfe@db/app\n")
        expected = "is not UTF-8"
    else:
        dotenv.write_text(f"DATABASE_URL=postgresql://app:{PASSWORD}@db/app\n")
        dotenv.chmod(0)
        prefix = _drop_root_read()
        expected = "cannot be read: Permission denied"
    done = cli({}, "run", cwd=tmp_path, prefix=prefix)
    line = assert_one_clear_line(done, "'.env'", expected)
    assert PASSWORD not in line


@pytest.mark.parametrize(
    ("url", "reason"),
    [(f"postgresql://app:{PASSWORD}@db.example:notaport/app", "port is not a number"),
     (f"postgresql://app:{PASSWORD}%G1@db.example/app", "percent-encode"),
     (f"postgresql://app:{PASSWORD}@/app", "names no host"),
     (f"postgresql://app:{PASSWORD}/x@db.example/app", "port is not a number")],
    ids=["port", "percent-encoding", "no-host", "unencoded-slash"],
)
def test_a_malformed_database_url_is_one_line_without_its_password(tmp_path: Path, url: str, reason: str) -> None:
    for where in ("environment", ".env"):
        env = local_env(tmp_path)
        if where == "environment":
            env["DATABASE_URL"] = url
        else:
            (tmp_path / ".env").write_text(f"DATABASE_URL={url}\n")
        done = cli(env, "run", cwd=tmp_path)
        line = assert_one_clear_line(done, "DATABASE_URL", reason)
        assert "0xCONFIGSECRET" not in done.stdout + done.stderr, line


def test_every_bad_setting_is_reported_in_one_go(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"postgresql://app:{PASSWORD}@db.example:port/app",
        "FILESYNC_HTTP_TIMEOUT": "inf",
        "FILESYNC_LEASE_SECONDS": str(3000 * 365 * 86400),
        "FILESYNC_CONCURRENCY": "100000",
        "FILESYNC_RETRY_BACKOFF_SECONDS": "1e30",
        "FILESYNC_SOURCE": "s3",
        "SPACES_ENDPOINT": "https://nyc3.digitaloceanspaces.com",
        "FILESYNC_ROUTES": "image/*=cloudflare-images;video/*=bunny",
        "CLOUDFLARE_API_TOKEN": "cf-0xCONFIGSECRET",
        "FILESYNC_LOG_LEVEL": "chatty",
        "FILESYNC_SHUTDOWN_GRACE": "nan",
        "FILESYNC_LOG_FILE": os.devnull,
    }
    done = cli(env, "run", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    head, *problems = done.stderr.splitlines()
    assert head == f"filesync: configuration error: {len(problems)} problems:"
    named = {line.strip().split("=")[0].split(" ")[0] for line in problems}
    assert named == {"DATABASE_URL", "FILESYNC_HTTP_TIMEOUT", "FILESYNC_LEASE_SECONDS", "FILESYNC_CONCURRENCY",
                     "FILESYNC_RETRY_BACKOFF_SECONDS", "SPACES_KEY", "SPACES_SECRET", "SPACES_BUCKET",
                     "CLOUDFLARE_ACCOUNT_ID", "BUNNY_STORAGE_ZONE", "BUNNY_API_KEY", "FILESYNC_LOG_LEVEL",
                     "FILESYNC_SHUTDOWN_GRACE"}, done.stderr
    assert "FILESYNC_LEASE_SECONDS='94608000000' is invalid: must be a whole number from 1 to 86400" in done.stderr
    assert "FILESYNC_HTTP_TIMEOUT='inf' is invalid: must be a number from 0.1 to 3600" in done.stderr
    assert "0xCONFIGSECRET" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_unknown_and_misspelt_variables_are_warned_about_with_the_setting_meant(
    tmp_path: Path, database_url: str
) -> None:
    (tmp_path / ".env").write_text("SPACES_SECERT=not-used\nFILESYNC_UID=10001\n")
    env = local_env(tmp_path, DATABASE_URL=database_url, FILESYNC_CONCURENCY="8", CLOUDFLARE_API_TOKN="x",
                    FILESYNC_NOT_A_THING="1", FILESYNC_GID="10001", FILESYNC_LOG_DIR="/var/log/filesync",
                    FILESYNC_CRONTAB="/etc/filesync/crontab", FILESYNC_CRON_ENV_FILE="/var/lib/filesync/cron.env",
                    FILESYNC_TEST_PGROOT="/tmp/pg")
    done = cli(env, "migrate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "filesync: warning: CLOUDFLARE_API_TOKN is not a filesync setting and is ignored; "
        "did you mean CLOUDFLARE_API_TOKEN?",
        "filesync: warning: FILESYNC_CONCURENCY is not a filesync setting and is ignored; "
        "did you mean FILESYNC_CONCURRENCY?",
        "filesync: warning: FILESYNC_NOT_A_THING is not a filesync setting and is ignored",
        "filesync: warning: SPACES_SECERT (in the settings file) is not a filesync setting and is ignored; "
        "did you mean SPACES_SECRET?",
    ]
