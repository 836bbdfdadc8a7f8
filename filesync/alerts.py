"""Alerts: after a run, a short JSON POST to FILESYNC_ALERT_WEBHOOK when something needs a person.

Conditions: the run had failures (parked or waiting files), a destination was stopped (its circuit opened:
credentials, quota, a failing streak), or the backlog has not shrunk for FILESYNC_ALERT_STALL_RUNS runs.
Each condition alerts once, when it appears, and again only after a run where it cleared: the memory is in
the ledger's `meta` table, so one-shot cron runs and daemon replicas share it (no storm every ten minutes).
The body has a Slack-compatible `text`, so a Slack or Mattermost incoming webhook takes it as it is. A
webhook that fails is logged and retried at the next run; it never fails the run. The URL is a secret.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from filesync.ledger import Ledger, reports
from filesync.model import RunSummary
from filesync.observer import Observer
from filesync.redaction import redact
from filesync.settings import Environment, Setting, bounded_int, http_url, register

if TYPE_CHECKING:
    from filesync.app import App

log = structlog.get_logger("filesync")

ALERT_SETTINGS: tuple[Setting, ...] = register((
    Setting("FILESYNC_ALERT_WEBHOOK", "URL that gets a JSON POST (with a Slack-compatible `text`) after a run with "
            "failures, a stopped destination, or a backlog that stopped shrinking; once per condition until it "
            "clears. Unset: no alerts.", parse=http_url, secret=True, group="Alerts"),
    Setting("FILESYNC_ALERT_STALL_RUNS", "Runs in a row without the backlog shrinking before a `stalled` alert "
            "(1 to 1000).", default="6", parse=bounded_int(1, 1000), group="Alerts"),
))

TIMEOUT = 10.0  # seconds the webhook gets to answer: a slow one must not hold the next run
LOOK_CLOSER = "filesync status"


@dataclass(frozen=True)
class Alert:
    """What one POST says: the conditions that appeared, and the run's figures."""

    conditions: list[str]
    text: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps({"text": self.text, "filesync": self.details}, default=str).encode()


def conditions(summary: RunSummary, backlogs: list[int], stall_runs: int) -> list[str]:
    """The conditions this run leaves standing; `backlogs` are the backlog after recent runs, oldest first,
    this run's last."""
    found = []
    if summary.failed or summary.retry_later:
        found.append("failures")
    found += [f"stopped:{sink}" for sink in sorted(summary.stopped)]
    window = backlogs[-(stall_runs + 1):]
    if len(window) == stall_runs + 1 and window[-1] > 0 and min(window[1:]) >= window[0]:
        found.append("stalled")
    return found


def message(new: list[str], summary: RunSummary, backlog: int, top: list[reports.ErrorCount],
            stall_runs: int) -> Alert:
    s = summary
    lines = [f"filesync run {s.run_id}: {s.copied} copied, {s.failed} failed, {s.retry_later} to retry later, "
             f"{s.skipped} skipped; backlog {backlog}"]
    for condition in new:
        if condition == "failures":
            lines.append(f"- failures: {s.failed} file(s) parked, {s.retry_later} waiting for a retry")
        elif condition.startswith("stopped:"):
            sink = condition.removeprefix("stopped:")
            lines.append(f"- destination {sink} stopped: {s.stopped.get(sink, '')}")
        elif condition == "stalled":
            lines.append(f"- backlog not shrinking for {stall_runs} runs ({backlog} file(s) not done)")
    if top:
        lines.append("top errors: " + "; ".join(f"{e.count}x [{e.error_class}] {e.error[:120]}" for e in top))
    lines.append(f"look closer: `{LOOK_CLOSER}` (`filesync report --csv --state failed` for every file)")
    details = {
        "run_id": s.run_id, "conditions": new, "copied": s.copied, "failed": s.failed,
        "retry_later": s.retry_later, "skipped": s.skipped, "bytes": s.bytes, "stopped": s.stopped,
        "backlog": backlog, "top_errors": [{"count": e.count, "error_class": e.error_class, "status": e.status,
                                            "error": e.error, "example_id": e.example_id} for e in top],
        "command": LOOK_CLOSER,
    }
    return Alert(new, redact("\n".join(lines)), json.loads(redact(json.dumps(details, default=str))))


def post(url: str, alert: Alert, timeout: float = TIMEOUT) -> None:
    """One POST; OSError (urllib's errors included) when it does not get a 2xx."""
    request = urllib.request.Request(url, data=alert.body(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "filesync"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


@dataclass
class Alerts(Observer):
    """Decides and sends after each run (`run_finished`); does nothing without a webhook."""

    ledger: Ledger
    webhook: str | None
    stall_runs: int = 6
    send: Callable[[str, Alert], None] = post

    @classmethod
    def from_env(cls, ledger: Ledger, env: Environment) -> Alerts:
        values = env.resolve(ALERT_SETTINGS)
        return cls(ledger, values["FILESYNC_ALERT_WEBHOOK"], values["FILESYNC_ALERT_STALL_RUNS"])

    @classmethod
    def from_app(cls, app: App) -> Alerts:
        return cls.from_env(app.ledger, app.config.env)

    def run_finished(self, summary: RunSummary) -> None:
        if not self.webhook or summary.run_id is None or summary.dry_run:
            return
        try:
            self.after_run(summary)
        except Exception as exc:  # alerts are a courtesy: never the reason a run fails
            log.warning("alert_failed", error_class=type(exc).__name__, error=redact(str(exc)))

    def after_run(self, summary: RunSummary) -> Alert | None:
        """Record this run's conditions; send the ones that appeared. The alert sent, or None."""
        assert self.webhook is not None
        backlog = reports.backlog(self.ledger)
        raised: list[str] = []

        def update(state: dict[str, Any]) -> dict[str, Any]:
            backlogs = [*[int(b) for b in state.get("backlogs", [])], backlog][-(self.stall_runs + 1):]
            now = conditions(summary, backlogs, self.stall_runs)
            active = set(state.get("active", []))
            raised.extend(c for c in now if c not in active)
            return {"active": sorted(now), "backlogs": backlogs}

        reports.alert_state(self.ledger, update)
        if not raised:
            return None
        alert = message(raised, summary, backlog, reports.errors(self.ledger, 3), self.stall_runs)
        try:
            self.send(self.webhook, alert)
        except (OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            log.warning("alert_failed", conditions=raised, error=redact(str(reason)),
                        hint="the webhook is tried again after the next run; the run itself is unaffected")
            # Not delivered: forget these conditions, so the next run that still has them alerts again.
            reports.alert_state(self.ledger, lambda state: {**state, "active": sorted(
                set(state.get("active", [])) - set(raised))})
            return None
        log.info("alert_sent", conditions=raised)
        return alert
