"""Declared settings: one `Setting` per variable, read from the environment and then `.env`.

Every setting is declared once (here for the core, beside each sink and source for theirs) so that
validation, `filesync sinks`, the README table, `.env.example` and secret redaction all come from the
same list. A missing or malformed value raises `ConfigError` naming the variable, before any work.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from filesync.errors import ConfigError

T = TypeVar("T")
_SETTING = "filesync.setting"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its meaning, default, and how to parse it."""

    env: str
    help: str
    default: str | None = None
    required: bool = False
    secret: bool = False
    parse: Callable[[str], Any] = str
    group: str = "General"


def setting(env: str, help: str, *, default: str | None = None, required: bool = False, secret: bool = False,
            parse: Callable[[str], Any] = str, group: str = "General") -> Any:
    """A field of a plug-in's frozen settings dataclass, declared as an environment variable.

    The dataclass is the plug-in's typed settings: `Environment.load(cls)` fills it, so a misspelt field is
    a type error and each default lives in one place (the Setting, never the dataclass).
    """
    return field(repr=not secret, metadata={_SETTING: Setting(env, help, default, required, secret, parse, group)})


def settings_of(cls: type[Any]) -> tuple[Setting, ...]:
    """The Settings declared by a settings dataclass's fields, in order."""
    return tuple(f.metadata[_SETTING] for f in fields(cls))


# --- parsers: each raises ValueError with a short human reason -------------------------------------


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive whole number")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return raw.rstrip("/")


def postgres_url(raw: str) -> str:
    if urlsplit(raw).scheme not in {"postgres", "postgresql"}:
        raise ValueError("must be a postgresql:// URL")
    return raw


def identifier(raw: str) -> str:
    if not raw or "\x00" in raw or len(raw) > 63:
        raise ValueError("must be a PostgreSQL identifier of 1 to 63 characters")
    return raw


def qualified_name(raw: str) -> tuple[str, ...]:
    """`File` or `app.File`: a table name, optionally schema-qualified (split on the first dot)."""
    parts = tuple(raw.split(".", 1)) if "." in raw else (raw,)
    return tuple(identifier(p) for p in parts)


def tus_chunk_size(raw: str) -> int:
    value = positive_int(raw)
    if value % (256 * 1024) or not 5 * 1024 * 1024 <= value <= 200 * 1024 * 1024:
        raise ValueError("must be a multiple of 262144 between 5242880 and 209715200 (Stream's tus rules)")
    return value


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "filesync")


DEFAULT_ROUTES = "image/*=cloudflare-images;video/*=cloudflare-stream"

CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "PostgreSQL URL holding the app's table and filesync's ledger. Unset: an "
            "embedded PostgreSQL in FILESYNC_HOME.", parse=postgres_url, secret=True, group="Database"),
    Setting("FILESYNC_HOME", "Data folder for the embedded PostgreSQL and the demo.",
            default=_default_home(), group="Database"),
    Setting("FILESYNC_SCHEMA", "Schema holding filesync's own tables (created if missing).",
            default="filesync", parse=identifier, group="Database"),
    Setting("FILESYNC_FILES_TABLE", "The app's table listing files (`schema.table` allowed).",
            default="File", parse=qualified_name, group="Database"),
    Setting("FILESYNC_ID_COLUMN", "Column with the file's id (text, uuid or integer).", default="id",
            parse=identifier, group="Database"),
    Setting("FILESYNC_PATH_COLUMN", "Column with the object key in the bucket.", default="path",
            parse=identifier, group="Database"),
    Setting("FILESYNC_DATE_TAKEN_COLUMN", "Column with the capture date (carried as metadata).",
            default="dateTaken", parse=identifier, group="Database"),
    Setting("FILESYNC_GPS_COLUMN", "Column with GPS coordinates (carried as metadata).",
            default="gpsCoordinates", parse=identifier, group="Database"),
    Setting("FILESYNC_COPIED_COLUMN", "Boolean column filesync sets once every destination has the file.",
            default="copiedToCloudflare", parse=identifier, group="Database"),
    Setting("FILESYNC_SOURCE", "Where the bytes are read from: `s3` (Spaces) or `local`.", default="s3",
            group="Source"),
    Setting("FILESYNC_ROUTES", "MIME patterns to sinks, `pattern=sink,sink;...`. Types that match no "
            "pattern are skipped.", default=DEFAULT_ROUTES, group="Routing"),
    Setting("FILESYNC_CONCURRENCY", "Transfers at once.", default="4", parse=positive_int, group="Run"),
    Setting("FILESYNC_MAX_ATTEMPTS", "Attempts (across runs) before a file is parked as failed.",
            default="5", parse=positive_int, group="Run"),
    Setting("FILESYNC_RETRY_BACKOFF_SECONDS", "First delay before a failed file is tried again in a later "
            "run; doubles each attempt, capped at a day.", default="300", parse=positive_float, group="Run"),
    Setting("FILESYNC_REQUEST_RETRIES", "Tries of one request within a run for transient errors.",
            default="5", parse=positive_int, group="Run"),
    Setting("FILESYNC_REQUEST_MAX_WAIT", "Longest wait in seconds between two tries of one request.",
            default="60", parse=positive_float, group="Run"),
    Setting("FILESYNC_HTTP_TIMEOUT", "Seconds to wait for a service to answer one request.",
            default="120", parse=positive_float, group="Run"),
    Setting("FILESYNC_LEASE_SECONDS", "How long a claimed file stays reserved for its worker; renewed while "
            "its transfer makes progress. Keep it above the longest single request (one tus chunk on your "
            "slowest link).", default="300", parse=positive_int, group="Run"),
    Setting("FILESYNC_CLAIM_BATCH", "Files claimed at once by a worker.", default="8", parse=positive_int,
            group="Run"),
    Setting("FILESYNC_MAX_FILES", "Stop a run after this many files (0: no limit).", default="0",
            parse=non_negative_int, group="Run"),
    Setting("FILESYNC_WORKER_ID", "Name of this worker in leases and run records.",
            default=socket.gethostname(), group="Run"),
)


_registry: dict[str, Setting] = {}


def register(settings: Iterable[Setting]) -> tuple[Setting, ...]:
    """Add a feature's or plug-in's settings to the registry (rclone's RegisterGlobalOptions); returns them.

    Redaction, the unknown-variable warning, `.env.example` and the README table read the registry, so
    a feature declares its settings beside its code and registers them when its module is imported.
    """
    group = tuple(settings)
    for setting in group:
        _registry.setdefault(setting.env, setting)
    return group


PLUGIN_GROUPS = ("filesync.sources", "filesync.sinks")


def registered() -> tuple[Setting, ...]:
    """Every registered setting, then those of every installed plug-in (found by entry point, as fsspec's
    registry is fed), once each. A plug-in that cannot be imported contributes nothing here; naming it
    in FILESYNC_ROUTES or FILESYNC_SOURCE reports why."""
    found = dict(_registry)
    for group in PLUGIN_GROUPS:
        for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
            try:
                declared = ep.load().SETTINGS
            except Exception:  # a broken third-party plug-in must not break redaction of the others
                continue
            for setting in declared:
                found.setdefault(setting.env, setting)
    return tuple(found.values())


def setting_index(settings: Iterable[Setting]) -> dict[str, Setting]:
    return {s.env: s for s in settings}


register(CORE_SETTINGS)


class Environment(Mapping[str, str]):
    """The process environment over `.env`: the environment wins, as the issue asks."""

    def __init__(self, overrides: Mapping[str, str] | None = None, env_file: str | None = None) -> None:
        base = dict(os.environ) if overrides is None else dict(overrides)
        path = env_file or base.get("FILESYNC_ENV_FILE") or ".env"
        file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} if Path(path).is_file() else {}
        self._values = {**file_values, **base}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_value(self, setting: Setting) -> Any:
        """Parsed value of one setting; ConfigError names the variable."""
        raw = self._values.get(setting.env)
        if raw is None or raw.strip() == "":
            if setting.required:
                raise ConfigError(f"{setting.env} is required: {setting.help}")
            if setting.default is None:
                return None
            raw = setting.default
        try:
            return setting.parse(raw.strip())
        except (ValueError, TypeError) as exc:
            shown = "<hidden>" if setting.secret else repr(raw)
            reason = str(exc) if str(exc) and "invalid literal" not in str(exc) else "has the wrong form"
            raise ConfigError(f"{setting.env}={shown} is invalid: {reason}") from None

    def resolve(self, settings: Iterable[Setting]) -> dict[str, Any]:
        """All values at once, reporting every bad variable together."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for setting in settings:
            try:
                values[setting.env] = self.get_value(setting)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems))
        return values

    def load(self, cls: type[T]) -> T:
        """A settings dataclass filled from the environment; every bad variable is reported at once."""
        declared = [(f.name, f.metadata[_SETTING]) for f in fields(cls)]  # type: ignore[arg-type]
        values = self.resolve(s for _, s in declared)
        return cls(**{name: values[s.env] for name, s in declared})

    def secret_values(self, settings: Iterable[Setting]) -> list[str]:
        """Values that must never be printed: declared secrets and passwords inside URLs."""
        found: list[str] = []
        for setting in settings:
            raw = self._values.get(setting.env)
            if not raw or not setting.secret:
                continue
            password = urlsplit(raw).password if "://" in raw else None
            found.append(password or raw)
            if password:
                found.append(raw)
        return [v for v in found if len(v) >= 4]


@dataclass(frozen=True)
class AppTable:
    """The app's table and its columns, as configured."""

    table: tuple[str, ...]
    id: str
    path: str
    date_taken: str
    gps: str
    copied: str


@dataclass(frozen=True)
class Config:
    """The validated core settings; sinks and the source validate their own."""

    env: Environment
    database_url: str | None
    home: Path
    schema: str
    app: AppTable
    source: str
    routes: str
    concurrency: int
    max_attempts: int
    retry_backoff: float
    request_retries: int
    request_max_wait: float
    http_timeout: float
    lease_seconds: int
    claim_batch: int
    max_files: int
    worker_id: str

    @classmethod
    def load(cls, env: Environment | None = None) -> Config:
        env = env or Environment()
        v = env.resolve(CORE_SETTINGS)
        worker = v["FILESYNC_WORKER_ID"]
        if not re.fullmatch(r"[\w.@-]{1,100}", worker):
            raise ConfigError(f"FILESYNC_WORKER_ID={worker!r} is invalid: use letters, digits, . _ - @")
        return cls(
            env=env,
            database_url=v["DATABASE_URL"],
            home=Path(v["FILESYNC_HOME"]).expanduser(),
            schema=v["FILESYNC_SCHEMA"],
            app=AppTable(
                table=v["FILESYNC_FILES_TABLE"],
                id=v["FILESYNC_ID_COLUMN"],
                path=v["FILESYNC_PATH_COLUMN"],
                date_taken=v["FILESYNC_DATE_TAKEN_COLUMN"],
                gps=v["FILESYNC_GPS_COLUMN"],
                copied=v["FILESYNC_COPIED_COLUMN"],
            ),
            source=v["FILESYNC_SOURCE"],
            routes=v["FILESYNC_ROUTES"],
            concurrency=v["FILESYNC_CONCURRENCY"],
            max_attempts=v["FILESYNC_MAX_ATTEMPTS"],
            retry_backoff=v["FILESYNC_RETRY_BACKOFF_SECONDS"],
            request_retries=v["FILESYNC_REQUEST_RETRIES"],
            request_max_wait=v["FILESYNC_REQUEST_MAX_WAIT"],
            http_timeout=v["FILESYNC_HTTP_TIMEOUT"],
            lease_seconds=v["FILESYNC_LEASE_SECONDS"],
            claim_batch=v["FILESYNC_CLAIM_BATCH"],
            max_files=v["FILESYNC_MAX_FILES"],
            worker_id=worker,
        )
