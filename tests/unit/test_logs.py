"""filesync.logs: JSON lines with the required fields, one redaction step for every secret, rotation."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from filesync import logs, redaction
from filesync.errors import ConfigError
from filesync.settings import Environment

DB_PASSWORD = "pw-Zq81xDistinct"
TOKEN = "cf-token-Vv72Distinct"
SPACES_SECRET = "spaces-secret-Kk55Distinct"
SECRETS = (DB_PASSWORD, TOKEN, SPACES_SECRET)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    hooks = sys.excepthook, threading.excepthook
    levels = {name: logging.getLogger(name).level for name in ("", "filesync")}
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, logs._HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)


def _env(tmp_path: Path, **extra: str) -> Environment:
    values = {
        "FILESYNC_LOG_FILE": str(tmp_path / "logs" / "filesync.log"),
        "DATABASE_URL": f"postgresql://filesync:{DB_PASSWORD}@db.example:5432/app",
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "SPACES_SECRET": SPACES_SECRET,
        **extra,
    }
    return Environment(values, env_file=str(tmp_path / "no.env"))


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_json_lines_with_timestamp_level_event_and_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(_env(tmp_path), console=False)
    log = structlog.get_logger("filesync")
    structlog.contextvars.bind_contextvars(run_id=7)
    with structlog.contextvars.bound_contextvars(file_id="f-1", sink="local"):
        log.info("upload_finished", bytes=123, duration_ms=45, status="copied")
    log.warning("run_finished", copied=1)

    records = _lines(tmp_path / "logs" / "filesync.log")
    assert [r["event"] for r in records] == ["upload_finished", "run_finished"]
    first = records[0]
    assert first["level"] == "info" and first["run_id"] == 7 and first["file_id"] == "f-1"
    assert first["sink"] == "local" and first["bytes"] == 123 and first["duration_ms"] == 45
    assert str(first["timestamp"]).endswith("Z") and "T" in str(first["timestamp"])
    assert "file_id" not in records[1] and records[1]["level"] == "warning"
    stdout = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in stdout] == ["upload_finished", "run_finished"]


def test_every_secret_is_masked_in_fields_exceptions_and_library_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(_env(tmp_path), console=False)
    log = structlog.get_logger("filesync")
    log.info(f"connecting with {TOKEN}", url=f"postgresql://filesync:{DB_PASSWORD}@db.example/app",
             nested={"list": [SPACES_SECRET, 1], "obj": ValueError(TOKEN)})
    try:
        raise RuntimeError(f"refused key {SPACES_SECRET}")
    except RuntimeError:
        log.exception("upload_failed", error_class="internal")
    logging.getLogger("urllib3.connectionpool").warning("retrying with %s", TOKEN)
    logging.getLogger("botocore").info("not shown at INFO: %s", "botocore-info")

    text = (tmp_path / "logs" / "filesync.log").read_text()
    out = capsys.readouterr().out
    for secret in SECRETS:
        assert secret not in text
        assert secret not in out
    records = _lines(tmp_path / "logs" / "filesync.log")
    assert [r["event"] for r in records][1:] == ["upload_failed", "retrying with ***"]
    assert "RuntimeError: refused key ***" in str(records[1]["exception"])
    assert records[2]["logger"] == "urllib3.connectionpool" and records[2]["level"] == "warning"
    assert "botocore-info" not in text
    assert records[0]["url"] == "postgresql://filesync:***@db.example/app"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_renderer_on_a_terminal_is_readable_and_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    logs.configure(_env(tmp_path))
    structlog.get_logger("filesync").info("run_started", token=TOKEN)
    out = terminal.getvalue()
    assert "run_started" in out and TOKEN not in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])
    assert _lines(tmp_path / "logs" / "filesync.log")[0]["token"] == "***"


def test_console_request_still_gives_json_when_stdout_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(_env(tmp_path), console=True)  # what `filesync run` asks for; cron.log is a file
    structlog.get_logger("filesync").info("run_started", run_id=3)
    assert json.loads(capsys.readouterr().out)["run_id"] == 3


def test_level_setting_filters_filesync_events(tmp_path: Path) -> None:
    logs.configure(_env(tmp_path, FILESYNC_LOG_LEVEL="warning"), console=False)
    log = structlog.get_logger("filesync.pipeline")
    log.info("file_claimed")
    log.error("run_crashed")
    assert [r["event"] for r in _lines(tmp_path / "logs" / "filesync.log")] == ["run_crashed"]


def test_bad_level_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FILESYNC_LOG_LEVEL"):
        logs.configure(_env(tmp_path, FILESYNC_LOG_LEVEL="LOUD"), console=False)


def test_missing_folder_is_created_and_unwritable_one_is_a_config_error(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c" / "filesync.log"
    logs.configure(_env(tmp_path, FILESYNC_LOG_FILE=str(deep)), console=False)
    structlog.get_logger("filesync").info("hello")
    assert _lines(deep)[0]["event"] == "hello"

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    with pytest.raises(ConfigError, match="FILESYNC_LOG_FILE") as caught:
        logs.configure(_env(tmp_path, FILESYNC_LOG_FILE=str(blocker / "logs" / "x.log")), console=False)
    assert "cannot write" in str(caught.value)


def test_size_rotation_keeps_backups_of_whole_json_lines(tmp_path: Path) -> None:
    logs.configure(_env(tmp_path, FILESYNC_LOG_MAX_BYTES="2000", FILESYNC_LOG_BACKUPS="2"), console=False)
    log = structlog.get_logger("filesync")
    for i in range(100):
        log.info("tick", n=i, padding="x" * 50)
    folder = tmp_path / "logs"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["filesync.log", "filesync.log.1", "filesync.log.2"]
    seen = [r["n"] for name in reversed(names) for r in _lines(folder / name)]
    assert seen == sorted(seen) and seen[-1] == 99  # newest at the end of the live file, nothing torn


def test_zero_max_bytes_reopens_after_external_rotation(tmp_path: Path) -> None:
    logs.configure(_env(tmp_path, FILESYNC_LOG_MAX_BYTES="0"), console=False)
    log = structlog.get_logger("filesync")
    path = tmp_path / "logs" / "filesync.log"
    log.info("before")
    path.rename(path.with_name("filesync.log.1"))  # what logrotate does
    log.info("after")
    assert [r["event"] for r in _lines(path)] == ["after"]
    assert [r["event"] for r in _lines(path.with_name("filesync.log.1"))] == ["before"]


def test_uncaught_thread_exception_is_logged_redacted(tmp_path: Path) -> None:
    logs.configure(_env(tmp_path), console=False)

    def boom() -> None:
        raise RuntimeError(f"bad token {TOKEN}")

    thread = threading.Thread(target=boom, name="worker-x")
    thread.start()
    thread.join()
    record = _lines(tmp_path / "logs" / "filesync.log")[-1]
    assert record["event"] == "unhandled_exception" and record["level"] == "critical"
    assert "bad token ***" in str(record["exception"]) and TOKEN not in json.dumps(record)


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:hunter22@cache:6379/0", "redis://:***@cache:6379/0"),
    ("see https://user:p%40ss@host/x and more", "see https://user:***@host/x and more"),
    ("no secrets here", "no secrets here"),
])
def test_redactor_masks_url_passwords_even_when_undeclared(text: str, expected: str) -> None:
    assert redaction.Redactor().text(text) == expected


def test_redactor_masks_decoded_form_of_an_encoded_password() -> None:
    redactor = redaction.Redactor(["p%40ssw0rd-long"])
    assert redactor.text("login failed for p@ssw0rd-long") == "login failed for ***"


# --- a log that cannot be written: one warning, no traceback per event, logging goes on -------------


def test_a_log_file_that_cannot_be_written_warns_once_and_stdout_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(_env(tmp_path, FILESYNC_LOG_FILE="/dev/full"), console=False)  # every write: ENOSPC
    log = structlog.get_logger("filesync")
    for i in range(20):
        log.info("tick", n=i)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "filesync: cannot write the log file /dev/full (No space left on device); going on without it, "
        "its events are lost until it can be written again"
    ]
    assert [json.loads(line)["n"] for line in captured.out.splitlines()] == list(range(20))


def test_the_warning_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / f"logs-{TOKEN}"
    folder.mkdir()
    (folder / "filesync.log").symlink_to("/dev/full")
    logs.configure(_env(tmp_path, FILESYNC_LOG_FILE=str(folder / "filesync.log")), console=False)
    structlog.get_logger("filesync").info("hello")
    err = capsys.readouterr().err
    assert f"cannot write the log file {tmp_path}/logs-***/filesync.log" in err and TOKEN not in err


class _FlakyStdout(io.StringIO):
    """A stdout whose reader went away (EPIPE) and came back."""

    broken = True

    def write(self, text: str) -> int:
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_handler_that_can_write_again_says_how_many_events_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = _FlakyStdout()
    monkeypatch.setattr(sys, "stdout", flaky)
    logs.configure(_env(tmp_path), console=False)
    log = structlog.get_logger("filesync")
    for i in range(5):
        log.info("tick", n=i)
    flaky.broken = False
    log.info("tick", n=5)
    log.info("tick", n=6)
    assert capsys.readouterr().err.splitlines() == [
        "filesync: cannot write stdout (Broken pipe); going on without it, its events are lost until it can be "
        "written again",
        "filesync: writing stdout again; 5 log events were not written to it",
    ]
    assert [json.loads(line)["n"] for line in flaky.getvalue().splitlines()] == [5, 6]
    assert [r["n"] for r in _lines(tmp_path / "logs" / "filesync.log")] == list(range(7))


@pytest.mark.parametrize("max_bytes", ["10485760", "0"])
def test_reopen_writes_to_a_new_file_under_the_same_name(tmp_path: Path, max_bytes: str) -> None:
    logs.configure(_env(tmp_path, FILESYNC_LOG_MAX_BYTES=max_bytes), console=False)
    log = structlog.get_logger("filesync")
    path = tmp_path / "logs" / "filesync.log"
    log.info("before")
    path.rename(path.with_name("moved.log"))  # logrotate without copytruncate, then SIGHUP
    logs.reopen()
    log.info("after")
    assert [r["event"] for r in _lines(path)] == ["after"]
    assert [r["event"] for r in _lines(path.with_name("moved.log"))] == ["before"]
