"""Issue 12's pure parts: the run's figures, the display's text, warning lines, alert conditions, option values."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from rich.console import Console

from filesync import alerts, cli
from filesync.model import RunSummary
from filesync.progress import render, warning_line
from filesync.stats import RunStats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def text_of(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_figures_rates_eta_and_a_second_turn_counted_once() -> None:
    clock = Clock()
    stats = RunStats(clock=clock)
    stats.run_started(RunSummary(total_files=4))
    stats.transfer_started("a", "x/a.jpg", "local", 1000)
    stats.transfer_progress("a", "local", 1000)
    stats.transfer_finished("a", "local", "copied")
    stats.file_finished("a", "copied")
    stats.file_finished("b", "waiting")
    clock.now += 2
    p = stats.snapshot()
    assert (p.files_done, p.files_total, p.bytes_sent, p.waiting) == (2, 4, 1000, 1)
    assert p.files_per_second == 1.0 and p.bytes_total == 4000
    assert p.eta == (4000 - 1000) / 500  # by bytes once sizes are known: files differ in size, bytes less so
    stats.file_finished("b", "copied")  # the end-of-run pass copied it: still 2 files, none waiting
    p = stats.snapshot()
    assert (p.files_done, p.waiting, p.outcomes) == (2, 0, {"copied": 2})


def test_eta_by_files_while_no_size_is_known() -> None:
    """Files finished without a transfer (skipped, failed at inspection) give a file rate and no byte total."""
    clock = Clock()
    stats = RunStats(clock=clock)
    stats.run_started(RunSummary(total_files=5))
    stats.file_finished("a", "skipped")
    clock.now += 4
    p = stats.snapshot()
    assert p.bytes_total is None and not p.bytes_total_estimated
    assert p.eta == (5 - 1) / 0.25
    for name in "bcde":
        stats.file_finished(name, "skipped")
    assert stats.snapshot().eta == 0.0


def test_display_names_rate_limits_stopped_destinations_and_files_in_flight() -> None:
    clock = Clock()
    stats = RunStats(clock=clock)
    stats.run_started(RunSummary(total_files=10))
    stats.transfer_started("v1", "videos/v1.mp4", "cloudflare-stream", 4000)
    stats.transfer_progress("v1", "cloudflare-stream", 1000)
    stats.request_retried("cloudflare-images", "rate_limited", 30)
    stats.request_retried("bunny", "server", 1)
    stats.destination_stopped("bunny", "401: check BUNNY_API_KEY")
    clock.now += 1
    shown = text_of(render(stats.snapshot()))
    assert "0/10 files" in shown and "files/s" in shown and "MB/s" in shown and "ETA" in shown
    assert "cloudflare-images: rate-limited by the service, waiting 29 s" in shown
    assert "STOPPED bunny: 401: check BUNNY_API_KEY" in shown
    assert "25%  v1.mp4  -> cloudflare-stream" in shown and "retries 2" in shown
    clock.now += 60
    assert "rate-limited" not in text_of(render(stats.snapshot()))  # the note goes once the wait is long over


def test_a_warning_is_one_line_with_what_says_why() -> None:
    record = logging.LogRecord("filesync", logging.WARNING, __file__, 1, {
        "event": "upload_failed", "sink": "bunny", "file_id": "clip", "error_class": "server", "status": 503,
        "error": "injected\n503", "attempt": 1, "decision": "later"}, None, None)
    assert warning_line(record) == "warning: upload failed · bunny · clip · server · 503 · injected 503"


@pytest.mark.parametrize(("backlogs", "stalled"), [
    ([5, 5, 6, 5], True), ([5, 4, 6, 7], False), ([5, 5, 5], False), ([0, 0, 0, 0], False), ([9, 10, 11, 12], True),
])
def test_stall_is_a_backlog_that_never_got_below_where_it_was(backlogs: list[int], stalled: bool) -> None:
    assert ("stalled" in alerts.conditions(RunSummary(), backlogs, 3)) is stalled


def test_alert_conditions_and_text() -> None:
    summary = RunSummary(run_id=7, copied=2, failed=1, stopped={"bunny": "refused"})
    assert alerts.conditions(summary, [3], 6) == ["failures", "stopped:bunny"]
    alert = alerts.message(["stopped:bunny"], summary, 3, [], 6)
    assert "destination bunny stopped: refused" in alert.text and "filesync status" in alert.text
    assert alert.details["conditions"] == ["stopped:bunny"]


@pytest.mark.parametrize(("raw", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                              ("1h30m", 5400), ("1d", 86400)])
def test_durations(raw: str, seconds: float) -> None:
    assert cli.duration(raw) == seconds


@pytest.mark.parametrize(("raw", "n"), [("1024", 1024), ("500M", 500 * 1024**2), ("10G", 10 * 1024**3),
                                        ("1.5k", 1536), ("2GiB", 2 * 1024**3)])
def test_sizes(raw: str, n: int) -> None:
    assert cli.size(raw) == n


def test_an_unexpected_error_is_one_line_naming_the_log_or_its_traceback_with_verbose(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    log = tmp_path / "filesync.log"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FILESYNC_LOG_FILE", str(log))

    def broken(args: argparse.Namespace, env: Any) -> int:
        raise RuntimeError("a bug of ours")

    command = cli._guard(broken, validate=False)
    assert command(argparse.Namespace(verbose=False)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected error: RuntimeError: a bug of ours" in err and str(log) in err
    assert "Traceback" in log.read_text() and "command_crashed" in log.read_text()
    assert command(argparse.Namespace(verbose=True)) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
