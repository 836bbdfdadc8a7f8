"""The `filesync` command: one subcommand per way of using it, and one set of exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType
from typing import Any

from filesync import __version__, daemon, demo, logs, pipeline, redaction, report, sinks
from filesync.app import App, all_settings, resolve_settings
from filesync.errors import (
    ConfigError,
    ExitCode,
    FilesyncError,
    LedgerError,
    LedgerUnavailable,
    SinkError,
    SourceUnavailable,
)
from filesync.ledger import PostgresLedger, app_table
from filesync.progress import ProgressDisplay
from filesync.settings import Environment
from filesync.verify import verify


def _configure_logging(env: Environment, console: bool, console_level: str | None = None) -> None:
    logs.configure(env, console=console, console_level=console_level)


def _err(message: str, env: Environment | None = None) -> None:
    """One line on stderr, with every secret value of `env` masked (errors can quote anything)."""
    if env is not None:
        redaction.install(env.secret_values(all_settings()))
    print(f"filesync: {redaction.redact(message)}", file=sys.stderr)


Command = Callable[[argparse.Namespace, Environment], int]


def _guarded(fn: Command) -> Callable[[argparse.Namespace], int]:
    """Map our errors to exit codes with one clear line on stderr. Every setting is validated first,
    before logging is set up or anything is built, so all the bad ones are reported together."""
    return _guard(fn, validate=True)


def _guarded_own_settings(fn: Command) -> Callable[[argparse.Namespace], int]:
    """`_guarded` for a command that builds its own settings (the demo) and needs none of the user's."""
    return _guard(fn, validate=False)


def _guard(fn: Command, *, validate: bool) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        env: Environment | None = None
        try:
            env = Environment()
            for line in env.unknown(all_settings()):
                _err(f"warning: {line}")
            if validate:
                resolve_settings(env)
            return fn(args, env)
        except ConfigError as exc:
            _err(f"configuration error: {exc}", env)
            return ExitCode.CONFIG
        except LedgerUnavailable as exc:
            _err(f"database unavailable: {exc}", env)
            return ExitCode.DATABASE
        except LedgerError as exc:
            _err(f"database error: {exc}", env)
            return ExitCode.DATABASE
        except SourceUnavailable as exc:
            _err(f"source unavailable: {exc}", env)
            return ExitCode.SOURCE

    return wrapper


class _Signals:
    """First SIGINT/SIGTERM: stop claiming, let transfers finish. Second: cancel transfers now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abort = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.abort.set()
            _err("second signal: cancelling transfers in flight")
        else:
            self.stop.set()
            _err("stopping: no new files will be started (signal again to cancel transfers in flight)")


@_guarded
def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    """One pass over the due files, then exit."""
    interactive = sys.stdout.isatty() and not args.quiet
    # At a terminal the progress bar and the summary tell the story; per-file events go to the log file.
    _configure_logging(env, console=True, console_level="WARNING" if interactive else None)
    signals = _Signals()
    signals.install()
    with App.build(env) as app:
        if args.quiet or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
            summary = pipeline.run(app, stop=signals.stop, abort=signals.abort)
        else:
            with ProgressDisplay() as display:
                summary = pipeline.run(app, stop=signals.stop, abort=signals.abort, observer=display)
        code = report.exit_code(summary)
        if not args.quiet:
            print(report.summary_text(summary, app.ledger, code))
        return code


@_guarded
def cmd_migrate(args: argparse.Namespace, env: Environment) -> int:
    """Create or upgrade filesync's own tables, and nothing else."""
    with App.build(env) as app:
        applied = app.ledger.migrate()
    print(f"migrations applied: {', '.join(map(str, applied))}" if applied else "schema is up to date")
    return ExitCode.OK


@_guarded
def cmd_daemon(args: argparse.Namespace, env: Environment) -> int:
    """Run on the schedule until SIGTERM."""
    logs.configure(env)
    return daemon.serve(env, App.build, pipeline.run)


@_guarded
def cmd_status(args: argparse.Namespace, env: Environment) -> int:
    """Counts by state and the latest problems, from the ledger."""
    with App.build(env) as app:
        app.ledger.migrate()
        print(report.status_text(app.ledger, limit=args.limit))
    return ExitCode.OK


@_guarded
def cmd_retry(args: argparse.Namespace, env: Environment) -> int:
    """Make parked (failed) files due again."""
    if not args.all and not args.file_ids:
        raise ConfigError("name the file ids to retry, or pass --all")
    with App.build(env) as app:
        app.ledger.migrate()
        n = app.ledger.retry(None if args.all else args.file_ids)
    print(f"{n} file(s) queued again")
    return ExitCode.OK


@_guarded
def cmd_check(args: argparse.Namespace, env: Environment) -> int:
    """Validate settings, then reach the database, the source and every routed sink once."""
    rows: list[tuple[str, bool, str]] = []
    with App.build(env) as app:
        rows.append(_probe("database", app.ledger.ping))
        table_rows = _app_table_rows(app.ledger) if rows[-1][1] and isinstance(app.ledger, PostgresLedger) else []
        rows.extend(table_rows)
        rows.append(_probe(f"source ({app.config.source})", app.source.check))
        for name, sink in app.sinks.items():
            rows.append(_probe(f"sink {name}", sink.check))
        try:
            # An index hint for a table that is missing or wrong would mislead.
            hint = app.ledger.not_copied_index_hint() if all(ok for _, ok, _ in table_rows) else None
        except FilesyncError:
            hint = None  # the database row above already says why
    redaction.install(env.secret_values(all_settings()))
    width = max(len(r[0]) for r in rows)
    for name, ok, why in rows:
        print(redaction.redact(f"{name:<{width}}  {'ok' if ok else 'FAILED'}  {why}".rstrip()))
    if hint:
        print(f"hint: the app's table has no partial index for 'not yet copied'; on a large table run:\n  {hint};")
    return ExitCode.OK if all(ok for _, ok, _ in rows) else ExitCode.CHECK_FAILED


def _app_table_rows(ledger: PostgresLedger) -> list[tuple[str, bool, str]]:
    """A row per problem with the app's table or its columns (each names its setting), or one ok row."""
    name = f"app table {'.'.join(ledger.app.table)}"
    try:
        found = app_table.problems(ledger.db, ledger.app, ledger.schema)
    except FilesyncError as exc:
        return [(name, False, str(exc))]
    return [(name, False, problem) for problem in found] or [(name, True, "")]


def _probe(name: str, fn: Callable[[], Any]) -> tuple[str, bool, str]:
    try:
        fn()
    except (FilesyncError, OSError) as exc:
        reason = exc.reason if isinstance(exc, SinkError) else str(exc)
        return name, False, reason
    return name, True, ""


@_guarded
def cmd_verify(args: argparse.Namespace, env: Environment) -> int:
    """Re-check that copied files exist at their destinations; --repair queues the drifted ones again."""
    _configure_logging(env, console=False)
    try:
        since = datetime.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise ConfigError(f"--since {args.since!r} is not an ISO date or time") from None
    with App.build(env) as app:
        result = verify(app, sample=args.sample, since=since, sink=args.sink, repair=args.repair)
    drift = result.drift or []
    errors = result.errors or []
    print(f"checked {result.checked} copies: {len(drift)} drifted, {len(errors)} could not be checked"
          + (f", {result.repaired} queued again" if args.repair else ""))
    for d in drift:
        print(f"  {d.file_id}  [{d.sink}]  {d.reason}")
    for d in errors:
        print(f"  {d.file_id}  [{d.sink}]  not checked: {d.reason}")
    for name, count in sorted(result.not_configured.items()):
        print(f"  [{name}]  {count} copies not checked: the destination is not routed or configured here "
              "(FILESYNC_ROUTES and its settings)")
    if errors or result.not_configured or (drift and not args.repair):
        return ExitCode.FILES_FAILED
    return ExitCode.OK


def cmd_sinks(args: argparse.Namespace) -> int:
    """Installed sinks with their settings."""
    for name in sorted(sinks.registry()):
        try:
            cls = sinks.load(name)
        except ConfigError as exc:
            print(f"{name}: unavailable ({exc})")
            continue
        caps = cls.capabilities
        kinds = ",".join(sorted(str(k) for k in caps.kinds))
        print(f"{name}  (kinds: {kinds}{', resumable' if caps.resumable else ''}"
              f"{', keeps metadata' if caps.keeps_metadata else ''})")
        for s in cls.SETTINGS:
            flags = ["required" if s.required else f"default {s.default!r}" if s.default else "optional"]
            if s.secret:
                flags.append("secret")
            print(f"    {s.env:<28} {'; '.join(flags):<22} {s.help}")
    return ExitCode.OK


@_guarded_own_settings
def cmd_demo(args: argparse.Namespace, env: Environment) -> int:
    """Seed sample files and run the real pipeline into a local folder: no cloud account needed."""
    return demo.main(env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filesync",
        description="Copy media listed in PostgreSQL from a bucket to Cloudflare Images/Stream and other sinks.",
    )
    parser.add_argument("--version", action="version", version=f"filesync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="one pass over the due files, then exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=cmd_run)
    sub.add_parser("daemon", help="run on FILESYNC_SCHEDULE until stopped").set_defaults(func=cmd_daemon)
    sub.add_parser("migrate", help="create or upgrade filesync's tables").set_defaults(func=cmd_migrate)
    p = sub.add_parser("status", help="counts by state and the latest problems")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("retry", help="queue parked (failed) files again")
    p.add_argument("file_ids", nargs="*")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_retry)
    p = sub.add_parser("verify", help="re-check that copied files exist at their destinations")
    p.add_argument("--sample", type=int, default=None, help="check N random copies instead of all")
    p.add_argument("--since", default=None, help="only copies made since this ISO date/time")
    p.add_argument("--sink", default=None, help="only this destination")
    p.add_argument("--repair", action="store_true", help="queue drifted files again")
    p.set_defaults(func=cmd_verify)
    sub.add_parser("check", help="validate settings and reach every destination").set_defaults(func=cmd_check)
    sub.add_parser("sinks", help="list installed sinks and their settings").set_defaults(func=cmd_sinks)
    sub.add_parser("demo", help="seed sample files and sync them to a local folder").set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `filesync status | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
