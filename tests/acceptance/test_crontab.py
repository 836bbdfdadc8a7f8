"""The crontab: valid cron syntax, and its command really runs a sync, as supercronic and Debian cron run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from filesync.schedule import DAEMON_SETTINGS, cron_expression
from tests.acceptance.daemon_support import assert_no_secrets, base_env, query, read_log, seed

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def _crontab() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(environment lines, [(schedule, command)]) as cron reads a user crontab."""
    env: dict[str, str] = {}
    jobs: list[tuple[str, str]] = []
    for raw in (ROOT / "crontab").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = ENV_LINE.match(line)
        if match and not line[0].isdigit() and not line.startswith("*"):
            env[match.group(1)] = match.group(2).strip().strip("'\"")
            continue
        fields = line.split(None, 5)
        jobs.append((" ".join(fields[:5]), fields[5]))
    return env, jobs


def test_crontab_line_is_valid_cron_with_the_daemons_schedule() -> None:
    env, jobs = _crontab()
    assert len(jobs) == 1
    schedule, command = jobs[0]
    trigger = CronTrigger.from_crontab(schedule, timezone=ZoneInfo("UTC"))
    assert trigger.get_next_fire_time(None, datetime(2024, 1, 1, 0, 1, tzinfo=ZoneInfo("UTC"))) == datetime(
        2024, 1, 1, 0, 10, tzinfo=ZoneInfo("UTC"))
    assert cron_expression(schedule) == next(s.default for s in DAEMON_SETTINGS if s.env == "FILESYNC_SCHEDULE")
    assert command.startswith("filesync run")
    assert ">> /var/log/filesync/" in command and command.endswith("2>&1")
    assert "/usr/local/bin" in env["PATH"].split(":")
    assert env["FILESYNC_ENV_FILE"].startswith("-/var/lib/filesync/")  # optional: absent under supercronic


def _localised(text: str, tmp_path: Path) -> str:
    """The container's paths mapped into the test's folder."""
    return text.replace("/var/log/filesync", str(tmp_path / "logs")).replace("/var/lib/filesync",
                                                                               str(tmp_path / "home"))


def _run_job(command: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)


def _check_sync_happened(tmp_path: Path, database_url: str, ids: list[str]) -> None:
    rows = query(database_url, 'SELECT id FROM "File" WHERE "copiedToCloudflare" ORDER BY id')
    assert [r[0] for r in rows] == sorted(ids)
    assert sorted(p.stem for p in (tmp_path / "dst").glob("*.png")) == sorted(ids)
    assert query(database_url, "SELECT count(*) FROM filesync.runs WHERE status = 'ok'") == [(1,)]
    events = [r["event"] for r in read_log(tmp_path / "logs" / "filesync.log")]
    assert events[0] == "run_started" and events[-1] == "run_finished"


def test_command_runs_under_debian_cron_with_settings_from_the_env_file(tmp_path: Path, database_url: str) -> None:
    """Debian cron: only the crontab's variables (and HOME, LOGNAME, SHELL) reach the job."""
    ids = list(seed(database_url, tmp_path / "src", {"c1": 1000, "c2": 2000}))
    crontab_env, jobs = _crontab()
    container_env = base_env(tmp_path, database_url)
    container_env.pop("FILESYNC_ENV_FILE")
    container_env["FILESYNC_LOG_FILE"] = str(tmp_path / "logs" / "filesync.log")
    (tmp_path / "home").mkdir()
    env_file = _localised(crontab_env["FILESYNC_ENV_FILE"].removeprefix("-"), tmp_path)
    # What docker/entrypoint.sh does before it starts Debian cron:
    written = subprocess.run(["/bin/sh", str(ROOT / "docker" / "entrypoint.sh"), "write-env", env_file],
                             env={**container_env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr

    job_env = {k: _localised(v, tmp_path) for k, v in crontab_env.items()}
    job_env["PATH"] = f"{VENV_BIN}:{job_env['PATH']}"  # the image's /usr/local/bin is the venv here
    job_env |= {"HOME": str(tmp_path / "home"), "LOGNAME": "filesync"}
    (tmp_path / "logs").mkdir()
    done = _run_job(_localised(jobs[0][1], tmp_path), job_env, tmp_path)
    assert done.returncode == 0, (tmp_path / "logs" / "cron.log").read_text()
    assert done.stdout == "" and done.stderr == ""  # everything went to the appended log
    _check_sync_happened(tmp_path, database_url, ids)
    cron_log = (tmp_path / "logs" / "cron.log").read_text()
    # not a terminal: JSON lines, no colour codes, even though `filesync run` prefers the console format
    assert [json.loads(line)["event"] for line in cron_log.splitlines()][-1] == "run_finished"
    assert_no_secrets(cron_log, (tmp_path / "logs" / "filesync.log").read_text())


def test_command_runs_under_supercronic_with_the_environment_passed_through(
    tmp_path: Path, database_url: str
) -> None:
    ids = list(seed(database_url, tmp_path / "src", {"s1": 1500}))
    crontab_env, jobs = _crontab()
    env = base_env(tmp_path, database_url)
    env |= {k: _localised(v, tmp_path) for k, v in crontab_env.items()}  # supercronic applies them too
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    assert not Path(env["FILESYNC_ENV_FILE"].removeprefix("-")).exists()
    (tmp_path / "logs").mkdir()
    done = _run_job(_localised(jobs[0][1], tmp_path), env, tmp_path)
    assert done.returncode == 0, (tmp_path / "logs" / "cron.log").read_text()
    _check_sync_happened(tmp_path, database_url, ids)
    # appended, not overwritten: a second tick adds to the same file
    before = (tmp_path / "logs" / "cron.log").stat().st_size
    assert _run_job(_localised(jobs[0][1], tmp_path), env, tmp_path).returncode == 0
    assert (tmp_path / "logs" / "cron.log").stat().st_size > before
