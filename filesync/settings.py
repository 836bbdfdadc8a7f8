"""Declared settings: one `Setting` per variable, read from the environment and then `.env`.

Every setting is declared once (here for the core, beside each sink and source for theirs) so that
validation, `filesync sinks`, the README table, `.env.example` and secret redaction all come from the
same list. A missing or malformed value raises `ConfigError` naming the variable, before any work.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from dotenv import dotenv_values

from filesync.errors import ConfigError

T = TypeVar("T")
_SETTING = "filesync.setting"


class ConfigProblems(ConfigError):
    """Several settings are wrong: one line each, all reported at once so one edit fixes them all."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(dict.fromkeys(problems))  # a setting shared by two sinks is reported once
        lines = self.problems
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines))


def problems_of(exc: ConfigError) -> list[str]:
    """The separate problems a ConfigError reports (one, unless it is a ConfigProblems)."""
    return list(exc.problems) if isinstance(exc, ConfigProblems) else [str(exc)]


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


def _limit(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A parser for a whole number from `low` to `high`: values that parse but cannot work are refused
    with the range (a concurrency of 100000, a lease of a thousand years)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ValueError(f"must be a whole number from {_limit(low)} to {_limit(high)}")
        return value

    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """A parser for a number from `low` to `high`; `inf` and `nan` parse as floats and are refused too."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"must be a number from {_limit(low)} to {_limit(high)}")
        return value

    return parse


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


_URL_FORM = "postgresql://user:password@host:5432/database"
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def postgres_url(raw: str) -> str:
    """A libpq URL that libpq can use. Reasons never quote the URL's parts: a password with an unencoded
    `/` or `@` lands in the host or port, and the message must not show it."""
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ValueError(f"is not a URL of the form {_URL_FORM}") from None
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"must be a postgresql:// URL ({_URL_FORM})")
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise ValueError("has a % not followed by two hex digits: percent-encode special characters of the "
                         "password (% as %25, @ as %40, / as %2F, : as %3A)")
    hosts = parts.netloc.rpartition("@")[2]
    for item in hosts.split(","):
        try:
            port = urlsplit(f"//{item}").port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("its port is not a number from 1 to 65535 (a password with / @ or : in it must "
                             "be percent-encoded)")
    query = parse_qs(parts.query)
    if not any(urlsplit(f"//{item}").hostname for item in hosts.split(",")) and not query.get("host"):
        raise ValueError(f"names no host: {_URL_FORM} (a socket folder goes in ?host=/path)")
    if any(mode not in _SSLMODES for mode in query.get("sslmode", [])):
        raise ValueError(f"its sslmode must be one of {', '.join(_SSLMODES)}")
    return raw


def identifier(raw: str) -> str:
    if not raw or "\x00" in raw or len(raw) > 63:
        raise ValueError("must be a PostgreSQL identifier of 1 to 63 characters")
    return raw


def qualified_name(raw: str) -> tuple[str, ...]:
    """`File` or `app.File`: a table name, optionally schema-qualified (split on the first dot)."""
    parts = tuple(raw.split(".", 1)) if "." in raw else (raw,)
    return tuple(identifier(p) for p in parts)


def worker_id(raw: str) -> str:
    if not re.fullmatch(r"[\w.@-]{1,100}", raw):
        raise ValueError("use 1 to 100 letters, digits, . _ - @")
    return raw


def tus_chunk_size(raw: str) -> int:
    value = positive_int(raw)
    if value % (256 * 1024) or not 5 * 1024 * 1024 <= value <= 200 * 1024 * 1024:
        raise ValueError("must be a multiple of 262144 between 5242880 and 209715200 (Stream's tus rules)")
    return value


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "filesync")


DEFAULT_ROUTES = "image/*=cloudflare-images;video/*=cloudflare-stream"
HOUR, DAY = 3600, 86400

CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "PostgreSQL URL holding the app's table and filesync's ledger. Unset: an "
            "embedded PostgreSQL in FILESYNC_HOME.", parse=postgres_url, secret=True, group="Database"),
    Setting("FILESYNC_HOME", "Data folder for the embedded PostgreSQL and the demo.",
            default=_default_home(), group="Database"),
    Setting("FILESYNC_SCHEMA", "Schema holding filesync's own tables (created if missing).",
            default="filesync", parse=identifier, group="Database"),
    Setting("FILESYNC_FILES_TABLE", "The app's table listing files (`schema.table` allowed).",
            default="File", parse=qualified_name, group="Database"),
    Setting("FILESYNC_CATALOG", "No app table: take the work from filesync's own catalog of the source instead "
            "(`filesync scan` fills it; every run scans first). For mirroring a bucket or a Drive folder.",
            default="false", parse=boolean, group="Database"),
    Setting("FILESYNC_SCAN_PREFIX", "With FILESYNC_CATALOG: only objects whose key starts with this.", default="",
            group="Database"),
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
    Setting("FILESYNC_CONCURRENCY", "Transfers at once (1 to 256).", default="4", parse=bounded_int(1, 256),
            group="Run"),
    Setting("FILESYNC_MAX_ATTEMPTS", "Attempts (across runs) before a file is parked as failed (1 to 1000).",
            default="5", parse=bounded_int(1, 1000), group="Run"),
    Setting("FILESYNC_RETRY_BACKOFF_SECONDS", "First delay before a failed file is tried again in a later "
            "run; doubles each attempt, capped at a day (0.01 to 86400).", default="300",
            parse=bounded_float(0.01, DAY), group="Run"),
    Setting("FILESYNC_REQUEST_RETRIES", "Tries of one request within a run for transient errors (1 to 100).",
            default="5", parse=bounded_int(1, 100), group="Run"),
    Setting("FILESYNC_REQUEST_MAX_WAIT", "Longest wait in seconds between two tries of one request (0.01 to "
            "3600).", default="60", parse=bounded_float(0.01, HOUR), group="Run"),
    Setting("FILESYNC_HTTP_TIMEOUT", "Seconds to wait for a service to answer one request (0.1 to 3600).",
            default="120", parse=bounded_float(0.1, HOUR), group="Run"),
    Setting("FILESYNC_LEASE_SECONDS", "How long a claimed file stays reserved for its worker; renewed while "
            "its transfer makes progress; 1 to 86400. Keep it above the longest single request (one tus "
            "chunk on your slowest link).", default="300", parse=bounded_int(1, DAY), group="Run"),
    Setting("FILESYNC_CLAIM_BATCH", "Files claimed at once by a worker (1 to 1000).", default="8",
            parse=bounded_int(1, 1000), group="Run"),
    Setting("FILESYNC_MAX_FILES", "Stop a run after this many files (0: no limit).", default="0",
            parse=bounded_int(0, 1_000_000_000), group="Run"),
    Setting("FILESYNC_RUN_RETRIES", "Passes over the files that failed transiently, once the backlog of a run is "
            "done (rclone's --retries); their attempt is counted once (0 to 10).", default="1",
            parse=bounded_int(0, 10), group="Run"),
    Setting("FILESYNC_WORKER_ID", "Name of this worker in leases and run records.",
            default=socket.gethostname(), parse=worker_id, group="Run"),
)


_registry: dict[str, Setting] = {}
_declared_by: dict[str, str] = {}  # setting -> the module that registered it (a stable order)


def register(settings: Iterable[Setting]) -> tuple[Setting, ...]:
    """Add a feature's or plug-in's settings to the registry (rclone's RegisterGlobalOptions); returns them.

    Redaction, the unknown-variable warning, `.env.example` and the README table read the registry, so
    a feature declares its settings beside its code and registers them when its module is imported.
    """
    group = tuple(settings)
    module = str(sys._getframe(1).f_globals.get("__name__", ""))
    for setting in group:
        _registry.setdefault(setting.env, setting)
        _declared_by.setdefault(setting.env, module)
    return group


PLUGIN_GROUPS = ("filesync.sources", "filesync.sinks")


def registered() -> tuple[Setting, ...]:
    """Every registered setting, then those of every installed plug-in (found by entry point, as fsspec's
    registry is fed), once each. A plug-in that cannot be imported contributes nothing here; naming it
    in FILESYNC_ROUTES or FILESYNC_SOURCE reports why. The order does not depend on which feature happened to
    be imported first: the core's settings, then the features' by group name, then the plug-ins' by name."""
    core = {s.env for s in CORE_SETTINGS}
    # by group, then by the module that declared it (two features may share a group), then as declared
    order = {env: n for n, env in enumerate(_registry)}
    features = sorted((s for s in _registry.values() if s.env not in core),
                      key=lambda s: (s.group, _declared_by.get(s.env, ""), order[s.env]))
    found = {s.env: s for s in (*CORE_SETTINGS, *features)}
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


#: Variables named like settings that are none: the container's entrypoint, Compose, the tests and the
#: benchmarks read them. They are never reported as unknown.
NOT_SETTINGS = frozenset({
    "FILESYNC_ENV_FILE", "FILESYNC_UID", "FILESYNC_GID", "FILESYNC_LOG_DIR", "FILESYNC_CRONTAB",
    "FILESYNC_CRON_ENV_FILE", "FILESYNC_HTTP_PUBLISH", "FILESYNC_TEST_PGROOT", "FILESYNC_BENCH_PGROOT",
    "TEST_DATABASE_URL",
})
_PREFIX = "FILESYNC_"
_NEAR = 0.85  # difflib ratio from which another variable reads as a misspelt setting


def unknown_variables(names: Iterable[str], settings: Iterable[Setting]) -> list[tuple[str, str | None]]:
    """(variable, the setting it probably meant or None) for each variable that looks like a setting and
    is none: any FILESYNC_ name, and any name close to a setting's (CLOUDFLARE_API_TOKN). A misspelt
    setting is otherwise silently ignored and its default used."""
    known = {s.env for s in settings}
    found: list[tuple[str, str | None]] = []
    for name in sorted(names):
        if name in known or name in NOT_SETTINGS:
            continue
        upper = name.upper()
        if upper in known:
            found.append((name, upper))
            continue
        prefixed = upper.startswith(_PREFIX)
        close = _closest(upper, known)
        if prefixed or close:
            found.append((name, close))
    return found


def _closest(name: str, known: set[str]) -> str | None:
    """The setting `name` probably meant. FILESYNC_ names are compared without the prefix they share,
    which would otherwise make any two of them look alike."""
    if name.startswith(_PREFIX):
        tails = {k.removeprefix(_PREFIX): k for k in sorted(known)}
        close = difflib.get_close_matches(name.removeprefix(_PREFIX), tails, n=1, cutoff=0.75)
        return tails[close[0]] if close else None
    close = difflib.get_close_matches(name, known, n=1, cutoff=_NEAR)
    return close[0] if close else None


class Environment(Mapping[str, str]):
    """The process environment over `.env`: the environment wins, as the issue asks.

    `.env` in the working directory is read when it is there; a file named by FILESYNC_ENV_FILE must be
    there, unless its name starts with `-` (systemd's EnvironmentFile convention), since a misspelt path
    would otherwise run with every default. An `env_file` given by the caller that does not exist reads
    as no file.
    """

    def __init__(self, overrides: Mapping[str, str] | None = None, env_file: str | None = None) -> None:
        base = dict(os.environ) if overrides is None else dict(overrides)
        named = base.get("FILESYNC_ENV_FILE", "").strip() if env_file is None else ""
        path = env_file or named.removeprefix("-") or ".env"
        label = f"FILESYNC_ENV_FILE={named!r}" if named else f"the settings file {path!r}"
        file_values = _read_env_file(Path(path), label, required=bool(named) and not named.startswith("-"))
        self.file_keys = frozenset(file_values)
        self._values = {**file_values, **base}

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def unknown(self, settings: Iterable[Setting]) -> list[str]:
        """One warning line per variable that looks like a setting but is none, with where it was set."""
        lines = []
        for name, meant in unknown_variables(self._values, settings):
            where = " (in the settings file)" if name in self.file_keys else ""
            guess = f"; did you mean {meant}?" if meant else ""
            lines.append(f"{name}{where} is not a filesync setting and is ignored{guess}")
        return lines

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
            shown = "" if setting.secret else f"={raw!r}"  # a secret's value is never shown, not even a part
            reason = str(exc) if str(exc) and "invalid literal" not in str(exc) else "has the wrong form"
            if setting.secret and raw.strip() in reason:
                reason = "has the wrong form"
            raise ConfigError(f"{setting.env}{shown} is invalid: {reason}") from None

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
            raise ConfigProblems(problems)
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


def _read_env_file(path: Path, label: str, *, required: bool) -> dict[str, str]:
    """The file's variables; ConfigError in one line when it is required and missing, or unreadable."""
    if not path.exists():
        if required:
            where = "" if path.is_absolute() else f" (in {os.getcwd()})"
            raise ConfigError(f"{label} names no file{where}; a leading - makes it optional")
        return {}
    if path.is_dir():
        raise ConfigError(f"{label} is a folder, not a file of settings")
    if not path.is_file():  # /dev/null and the like: nothing to read
        return {}
    try:
        return {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label} is not UTF-8 text (byte {exc.start})") from None


@dataclass(frozen=True)
class AppTable:
    """The app's table and its columns, as configured."""

    table: tuple[str, ...]
    id: str
    path: str
    date_taken: str
    gps: str
    copied: str


def catalog_table(schema: str) -> AppTable:
    """filesync's catalog, seen as an app table (migration 0007's catalog_files view): the key is id and path."""
    return AppTable(table=(schema, "catalog_files"), id="key", path="key", date_taken="date_taken", gps="gps",
                    copied="copied")


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
    catalog: bool
    scan_prefix: str
    run_retries: int
    worker_id: str

    @classmethod
    def load(cls, env: Environment | None = None) -> Config:
        env = env or Environment()
        v = env.resolve(CORE_SETTINGS)
        return cls(
            env=env,
            database_url=v["DATABASE_URL"],
            home=Path(v["FILESYNC_HOME"]).expanduser(),
            schema=v["FILESYNC_SCHEMA"],
            app=catalog_table(v["FILESYNC_SCHEMA"]) if v["FILESYNC_CATALOG"] else AppTable(
                table=v["FILESYNC_FILES_TABLE"],
                id=v["FILESYNC_ID_COLUMN"],
                path=v["FILESYNC_PATH_COLUMN"],
                date_taken=v["FILESYNC_DATE_TAKEN_COLUMN"],
                gps=v["FILESYNC_GPS_COLUMN"],
                copied=v["FILESYNC_COPIED_COLUMN"],
            ),
            catalog=v["FILESYNC_CATALOG"],
            scan_prefix=v["FILESYNC_SCAN_PREFIX"],
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
            run_retries=v["FILESYNC_RUN_RETRIES"],
            worker_id=v["FILESYNC_WORKER_ID"],
        )
