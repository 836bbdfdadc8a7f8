"""structlog setup: JSON lines to a rotating file and to stdout, one redaction step for every secret.

Every event goes through the stdlib `logging` machinery (structlog's `ProcessorFormatter`), so
filesync's own events and third-party records (boto3, urllib3, apscheduler) share the same handlers,
the same JSON shape and the same redaction. The file handler is a size-based `RotatingFileHandler`:
rotation renames the file and opens a new one under the same name, which `tail -F` follows. With
`FILESYNC_LOG_MAX_BYTES=0` a `WatchedFileHandler` is used instead, for an external logrotate (it
reopens the file when logrotate moves it) — choose that when several processes (cron runs) share
one log file, since in-process rotation is only safe with a single writer.

A log that cannot be written (disk full, permissions changed after start, stdout closed) must not
take filesync down nor flood stderr: the stdlib prints "--- Logging error ---" and a traceback per
record. Our handlers instead print one redacted line on stderr when writing first fails, drop records
until it works again, then say how many were lost. A rotation that fails (read-only folder) keeps
writing to the current file past its size and retries a minute later. `reopen()` (the daemon's
SIGHUP) reopens the file under its name, for a logrotate without `copytruncate`.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from filesync import redaction
from filesync.errors import ConfigError
from filesync.settings import Environment, Setting, non_negative_int, register, registered

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
THIRD_PARTY_LEVEL = logging.WARNING
_HANDLER_MARK = "_filesync_handler"


def log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    return level


LOG_SETTINGS: tuple[Setting, ...] = register((
    Setting("FILESYNC_LOG_FILE", "JSON-lines log file (folder created if missing). The container sets "
            "/var/log/filesync/filesync.log.", default="./logs/filesync.log", group="Logs"),
    Setting("FILESYNC_LOG_LEVEL", "Lowest level logged for filesync's own events: DEBUG, INFO, WARNING, "
            "ERROR. Libraries log at WARNING and above.", default="INFO", parse=log_level, group="Logs"),
    Setting("FILESYNC_LOG_MAX_BYTES", "Rotate the log file at this size (renamed to .1, .2, ...; `tail -F` "
            "follows). 0: no in-process rotation, the file is reopened after an external logrotate.",
            default="10485760", parse=non_negative_int, group="Logs"),
    Setting("FILESYNC_LOG_BACKUPS", "Rotated log files kept.", default="5", parse=non_negative_int,
            group="Logs"),
))


def _redact_event(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The one structlog processor every handler runs last before rendering."""
    redactor = redaction.active()
    return {k: v if k.startswith("_") else redactor.value(v) for k, v in event_dict.items()}


def _pre_chain() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _final_chain(renderer: Processor) -> list[Processor]:
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,  # tracebacks become text first, so redaction sees them
        _drop_logger_for_own_events,
        _redact_event,
        _lead_with_essentials,
        renderer,
    ]


def _lead_with_essentials(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """timestamp, level and event first, so a line reads well in `tail -F` before any parsing."""
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    return {**head, **event_dict}


def _drop_logger_for_own_events(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if str(event_dict.get("logger", "")).startswith("filesync"):
        event_dict.pop("logger", None)
    return event_dict


class _WarnOnce(logging.Handler):
    """A handler that reports its first write failure once on stderr instead of a traceback per record."""

    _failing = False  # since the first failure, until a record is written again
    _failed_now = False  # the record being emitted failed
    _lost = 0

    def target(self) -> str:
        return "stdout"

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        try:
            super().emit(record)  # the stdlib catches its own errors and calls handleError
        except Exception:
            self.handleError(record)  # reopening a watched file raises past the stdlib's own catch
        if self._failing and not self._failed_now:
            lost, self._failing, self._lost = self._lost, False, 0
            _stderr(f"filesync: writing {self.target()} again; {lost} log events were not written to it")

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a formatting bug, not the output: the stdlib's report helps
            super().handleError(record)
            return
        self._failed_now = True
        self._lost += 1
        if not self._failing:
            self._failing = True
            _stderr(f"filesync: cannot write {self.target()} ({_reason(exc)}); going on without it, "
                    "its events are lost until it can be written again")


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or f"{type(exc).__name__}: {exc}"


def _stderr(message: str) -> None:
    """One line on stderr, redacted: the path or the error may quote a secret."""
    try:
        print(redaction.redact(message), file=sys.stderr, flush=True)
    except Exception:  # stderr gone too: nothing is left to tell
        pass


class _LogFile(_WarnOnce, logging.FileHandler):
    """What both kinds of log file share: the warning names the file, and `reopen` follows logrotate."""

    def target(self) -> str:
        return f"the log file {self.baseFilename}"

    def close(self) -> None:
        """Closing flushes, and a file that cannot be written must not make a reconfiguration raise."""
        with contextlib.suppress(OSError):
            super().close()

    def reopen(self) -> None:
        """Open the file under its name again; keep the old stream when that fails (a read-only folder)."""
        self.acquire()
        try:
            try:
                stream = self._open()
            except OSError as exc:
                _stderr(f"filesync: cannot reopen {self.target()} ({_reason(exc)}); "
                        "writing on to the file already open")
                return
            old, self.stream = self.stream, stream
            if isinstance(self, logging.handlers.WatchedFileHandler):
                self._statstream()
            if old is not None:
                with contextlib.suppress(OSError, ValueError):
                    old.close()
        finally:
            self.release()


ROTATE_RETRY = 60.0  # seconds between attempts to rotate once rotation failed


class _RotatingFile(_LogFile, logging.handlers.RotatingFileHandler):
    _rotate_after = 0.0  # monotonic time before which no rotation is tried (0: whenever due)
    _rotation_failing = False

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return time.monotonic() >= self._rotate_after and bool(super().shouldRollover(record))

    def doRollover(self) -> None:
        """A folder made read-only cannot take the rename: keep writing to the current file instead."""
        try:
            super().doRollover()
        except OSError as exc:
            self._rotate_after = time.monotonic() + ROTATE_RETRY
            if self.stream is None:
                self.stream = self._open()
            if not self._rotation_failing:
                self._rotation_failing = True
                _stderr(f"filesync: cannot rotate {self.target()} ({_reason(exc)}); writing on past "
                        f"FILESYNC_LOG_MAX_BYTES, trying again every {ROTATE_RETRY:g} s")
        else:
            self._rotate_after, self._rotation_failing = 0.0, False


class _WatchedFile(_LogFile, logging.handlers.WatchedFileHandler):
    pass


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if max_bytes > 0:
            return _RotatingFile(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        return _WatchedFile(path, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"FILESYNC_LOG_FILE={str(path)!r} is invalid: cannot write there ({reason})"
        ) from None


class _StdoutHandler(_WarnOnce, logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is now, so a progress bar that redirects stdout keeps its place."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def reopen() -> None:
    """Reopen the log file under its name (the daemon's SIGHUP): after logrotate moved it, lines go to
    the new file instead of the moved one."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_MARK, False) and isinstance(handler, _LogFile):
            handler.reopen()


def configure(env: Environment, *, console: bool | None = None, console_level: str | None = None) -> None:
    """Send every log event to the file and stdout.

    stdout gets the readable console format when it is a TTY (unless `console=False`), JSON otherwise.
    `console_level` raises stdout's threshold (the file keeps everything): an operator watching a
    progress bar wants warnings there, not a line per file.
    """
    values = env.resolve(LOG_SETTINGS)
    path = Path(values["FILESYNC_LOG_FILE"]).expanduser()
    file_handler = _file_handler(path, values["FILESYNC_LOG_MAX_BYTES"], values["FILESYNC_LOG_BACKUPS"])
    redaction.install(env.secret_values(registered()))

    # The readable format is for a person at a terminal; cron.log, `docker logs` and pipes get JSON
    # even when the command asked for it (console=True), since nobody reads colours there.
    console = (True if console is None else console) and sys.stdout.isatty()
    json_renderer = structlog.processors.JSONRenderer(sort_keys=False, default=str)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback)
        if console else json_renderer
    )
    file_handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=_final_chain(json_renderer), foreign_pre_chain=_pre_chain()))
    stdout_handler = _StdoutHandler()
    if console_level:
        stdout_handler.setLevel(console_level)
    stdout_handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=_final_chain(renderer), foreign_pre_chain=_pre_chain()))

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    for handler in (file_handler, stdout_handler):
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(THIRD_PARTY_LEVEL)
    logging.getLogger("filesync").setLevel(values["FILESYNC_LOG_LEVEL"])
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # configure() may run again (tests, reconfiguration)
    )
    _install_excepthooks()


def _install_excepthooks() -> None:
    """Uncaught exceptions are logged (redacted) instead of printed raw to stderr."""
    log = structlog.get_logger("filesync")

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.critical("unhandled_exception", error_class=kind.__name__, exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            log.critical("unhandled_exception", thread=getattr(args.thread, "name", None),
                         error_class=args.exc_type.__name__,
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = hook
    threading.excepthook = thread_hook

