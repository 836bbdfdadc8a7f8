"""When the daemon runs: the cron schedule, its time zone, and the daemon's other settings.

Below the daemon itself, so the settings registry and `filesync check` see these settings without
importing the front end. Weekday numbers mean what they mean in crontab (0 or 7 = Sunday).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from filesync.errors import ConfigError
from filesync.settings import Environment, Setting, boolean, non_negative_int, register

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _split_cron(expr: str) -> dict[str, str]:
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(
            f"needs 5 fields (minute hour day month weekday) or 6 (seconds first), got {len(fields)}"
        )
    names = ("second", "minute", "hour", "day", "month", "day_of_week")
    values = dict(zip(names, fields, strict=True))
    values["day_of_week"] = cron_weekdays(values["day_of_week"])
    return values


def _weekday_number(token: str) -> int:
    lowered = token.lower()
    if lowered[:3] in _WEEKDAYS and lowered.isalpha():
        return _WEEKDAYS.index(lowered[:3])
    number = int(token)
    if not 0 <= number <= 7:
        raise ValueError(f"weekday {token!r} is out of range 0-7")
    return number


def cron_weekdays(field: str) -> str:
    """Cron's weekday field (0 or 7 = Sunday) in APScheduler 3's terms, where 0 is Monday.

    APScheduler 3's `from_crontab` passes the numbers through unchanged, so `1-5` would mean Tuesday
    to Saturday; expanding to day names keeps the crontab meaning every cron user expects.
    """
    if field in {"*", "?"}:
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ValueError(f"step in weekday {part!r} must be positive")
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            low, high = _weekday_number(first), _weekday_number(last)
            if high < low:
                raise ValueError(f"weekday range {body!r} runs backwards")
        else:
            low = _weekday_number(body)
            high = 6 if step_text else low
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def cron_trigger(expr: str, timezone: tzinfo) -> CronTrigger:
    """A trigger from a 5-field crontab line, or 6 fields with seconds first (`*/5 * * * * *`)."""
    return CronTrigger(timezone=timezone, **_split_cron(expr))


def cron_expression(raw: str) -> str:
    """Parser for FILESYNC_SCHEDULE: the expression must build a trigger that fires at least once."""
    expr = " ".join(raw.split())
    trigger = cron_trigger(expr, ZoneInfo("UTC"))
    if trigger.get_next_fire_time(None, datetime.now(ZoneInfo("UTC"))) is None:
        raise ValueError("never fires")
    return expr


def timezone_name(raw: str) -> str:
    name = raw.strip().removeprefix(":")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None
    return name


def tcp_port(raw: str) -> int:
    port = non_negative_int(raw)
    if port > 65535:
        raise ValueError("must be a TCP port, 0 to 65535")
    return port


def http_token(raw: str) -> str:
    """FILESYNC_HTTP_TOKEN: long enough not to be guessed, and sendable in an Authorization header as is."""
    if len(raw) < 16 or not all(33 <= ord(c) <= 126 for c in raw):
        raise ValueError("must be at least 16 printable ASCII characters without spaces "
                         "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return raw


def grace_seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 24 * 3600:
        raise ValueError("must be a number of seconds between 0 and 86400")
    return value


DAEMON_SETTINGS: tuple[Setting, ...] = register((
    Setting("FILESYNC_SCHEDULE", "When `filesync daemon` starts a run: a cron expression (minute hour day "
            "month weekday). A sixth field in front adds seconds (`*/30 * * * * *`: every 30 s).",
            default="*/10 * * * *", parse=cron_expression, group="Daemon"),
    Setting("FILESYNC_TIMEZONE", "Time zone of FILESYNC_SCHEDULE (IANA name). Unset: TZ, else UTC.",
            parse=timezone_name, group="Daemon"),
    Setting("FILESYNC_RUN_ON_START", "Run once as soon as the daemon starts, then follow the schedule.",
            default="true", parse=boolean, group="Daemon"),
    Setting("FILESYNC_SHUTDOWN_GRACE", "Seconds in-flight transfers get to finish after SIGTERM before they "
            "are cancelled and handed back.", default="30", parse=grace_seconds, group="Daemon"),
    Setting("FILESYNC_HTTP_PORT", "Port of /healthz, /metrics, the JSON API and the status page while the "
            "daemon runs (0: no HTTP server).", default="9090", parse=tcp_port, group="Daemon"),
    Setting("FILESYNC_HTTP_HOST", "Address the daemon's HTTP server listens on. The container sets 0.0.0.0. "
            "Without FILESYNC_HTTP_TOKEN the API's reads answer only on a loopback address.",
            default="127.0.0.1", group="Daemon"),
    Setting("FILESYNC_HTTP_TOKEN", "Bearer token of the daemon's API (at least 16 characters). Needed by POST "
            "/api/retry and /api/run, which are disabled (403) without it; once set, every /api read needs it "
            "too. /healthz and /metrics stay open.", secret=True, parse=http_token, group="Daemon"),
    Setting("FILESYNC_START_JITTER", "Up to this many seconds of random delay before each scheduled run, so "
            "replicas on one schedule do not all start in the same second (the enqueue step is also "
            "locked: only one worker runs it at a time).", default="0", parse=grace_seconds, group="Daemon"),
))


@dataclass(frozen=True)
class DaemonConfig:
    schedule: str
    timezone: ZoneInfo
    run_on_start: bool
    grace: float
    http_host: str
    http_port: int
    start_jitter: float = 0.0
    http_token: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, env: Environment) -> DaemonConfig:
        values = env.resolve(DAEMON_SETTINGS)
        zone = values["FILESYNC_TIMEZONE"]
        if zone is None:
            tz_raw = env.get("TZ", "").strip()
            try:
                zone = timezone_name(tz_raw) if tz_raw else "UTC"
            except ValueError as exc:
                raise ConfigError(f"TZ={tz_raw!r} is invalid: {exc}") from None
        return cls(
            schedule=values["FILESYNC_SCHEDULE"],
            timezone=ZoneInfo(zone),
            run_on_start=values["FILESYNC_RUN_ON_START"],
            grace=values["FILESYNC_SHUTDOWN_GRACE"],
            http_host=values["FILESYNC_HTTP_HOST"],
            http_port=values["FILESYNC_HTTP_PORT"],
            start_jitter=values["FILESYNC_START_JITTER"],
            http_token=values["FILESYNC_HTTP_TOKEN"],
        )

