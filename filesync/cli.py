"""The `filesync` command: one subcommand per way of using it, and one set of exit codes.

Each subcommand's help explains it with an example (`filesync COMMAND --help`); `filesync` alone prints
them all. Usage errors print the subcommand's usage (exit 2); configuration errors name the setting (exit 2);
an unexpected error is one line naming the log file, or its traceback with `-v`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Any

from filesync import __version__, daemon, demo, logs, pipeline, plan, redaction, report, sinks, sources, stats
from filesync.alerts import ALERT_SETTINGS, Alerts
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
from filesync.ledger import PostgresLedger, app_table, reports
from filesync.logs import LOG_SETTINGS
from filesync.model import Limits, Selection
from filesync.observer import Observer, Observers
from filesync.progress import ProgressDisplay
from filesync.scan import scan
from filesync.settings import Environment, Setting
from filesync.verify import verify


def _configure_logging(env: Environment, console: bool, console_level: str | None = None) -> None:
    logs.configure(env, console=console, console_level=console_level)


def _err(message: str, env: Environment | None = None) -> None:
    """One line on stderr, with every secret value of `env` masked (errors can quote anything)."""
    if env is not None:
        redaction.install(env.secret_values(all_settings()))
    print(f"filesync: {redaction.redact(message)}", file=sys.stderr)


class UsageError(Exception):
    """A command line that cannot be done as asked (an unknown id, a --sink no route names): exit 2."""


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
        except UsageError as exc:
            _err(str(exc), env)
            return ExitCode.CONFIG
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
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug of ours: one line, the traceback in the log (or here with -v)
            return _crashed(exc, env, verbose=getattr(args, "verbose", False))

    return wrapper


def _crashed(exc: Exception, env: Environment | None, *, verbose: bool) -> int:
    if env is not None:
        redaction.install(env.secret_values(all_settings()))
    text = "".join(traceback.format_exception(exc))
    where = _log_crash(env, exc, text)
    if verbose:
        print(redaction.redact(text.rstrip()), file=sys.stderr)
    hint = f"the traceback is in {where}" if where else "no log file could be written"
    _err(f"unexpected error: {type(exc).__name__}: {exc} ({hint}; -v shows it here)")
    return ExitCode.FILES_FAILED


def _log_crash(env: Environment | None, exc: Exception, text: str) -> str | None:
    """Append the traceback to FILESYNC_LOG_FILE as one JSON line, as the log's other events are; its path."""
    try:
        path = Path(env.get_value(LOG_SETTINGS[0]) if env is not None else "./logs/filesync.log").expanduser()
        if str(path) == os.devnull:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"timestamp": datetime.now(UTC).isoformat(), "level": "critical", "event": "command_crashed",
                  "error_class": type(exc).__name__, "error": str(exc), "exception": text}
        with path.open("a", encoding="utf-8") as f:
            f.write(redaction.redact(json.dumps(record)) + "\n")
        return str(path.resolve())
    except Exception:
        return None


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


# --- option values ---------------------------------------------------------------------------------------


def duration(raw: str) -> float:
    """`90`, `90s`, `30m`, `2h`, `1h30m`, `1d`: seconds (rclone's --max-duration)."""
    text = raw.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m)")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def size(raw: str) -> int:
    """`500M`, `10G`, `1.5T`, `1024`: bytes, binary units as rclone reads them (K = KiB)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", raw.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a size (e.g. 500M, 10G)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def when(raw: str) -> datetime:
    """An ISO 8601 date or time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO date or time (e.g. 2024-06-01 or "
                                         "2024-06-01T12:00:00+02:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of 1 or more")
    return value


def _read_ids(source: str) -> list[str]:
    """--files-from: ids one a line (`-`: stdin); blank lines and `#` comments are ignored."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--files-from {source}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _selection(args: argparse.Namespace) -> Selection:
    ids: list[str] | None = None
    if args.file or args.files_from is not None:
        ids = list(args.file or []) + (_read_ids(args.files_from) if args.files_from is not None else [])
    return Selection(file_ids=frozenset(ids) if ids is not None else None, path_globs=tuple(args.path or ()),
                     since=args.since, until=args.until, sink=args.sink, limit=args.limit)


# --- run ---------------------------------------------------------------------------------------------------


@_guarded
def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    """One pass over the due files, then exit."""
    env.resolve((*stats.PROGRESS_SETTINGS, *ALERT_SETTINGS))  # named at once, not after the run
    selection = _selection(args)
    limits = Limits(max_duration=args.max_duration, max_bytes=args.max_transfer)
    if args.dry_run:
        return _dry_run(env, selection)
    display = (not args.quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb")
    # At a terminal the display and the summary tell the story (warnings above the display, one line each);
    # per-file events go to the log file. Elsewhere stdout carries the JSON events, run_progress included.
    interactive = sys.stdout.isatty() and not args.quiet
    _configure_logging(env, console=True,
                       console_level="CRITICAL" if display else "WARNING" if interactive else None)
    signals = _Signals()
    signals.install()
    with App.build(env) as app:
        _check_sink(app, selection.sink)
        narrowed = selection.narrows or selection.limit is not None
        counter = stats.RunStats(count_due=(lambda: reports.due_count(app.ledger, selection)) if narrowed else None)
        observer: Observer
        if display:
            screen = ProgressDisplay(counter)
            observer = Observers([screen, Alerts.from_app(app)])
            with screen:
                summary = pipeline.run(app, stop=signals.stop, abort=signals.abort, observer=observer,
                                       selection=selection, limits=limits)
        else:
            summary = pipeline.run(app, stop=signals.stop, abort=signals.abort,
                                   observer=stats.unattended(app, counter), selection=selection, limits=limits)
        code = report.exit_code(summary)
        if not args.quiet:
            print(report.summary_text(summary, app.ledger, code))
        return code


def _check_sink(app: App, sink: str | None) -> None:
    if sink is not None and sink not in app.routes.all_sinks():
        raise UsageError(f"--sink {sink}: FILESYNC_ROUTES names no such destination (it names: "
                         f"{', '.join(app.routes.all_sinks()) or 'none'})")


def _dry_run(env: Environment, selection: Selection) -> int:
    """The plan, read-only: nothing is migrated, enqueued, claimed or recorded, no destination contacted."""
    _configure_logging(env, console=False, console_level="CRITICAL")
    with App.build(env) as app:
        _check_sink(app, selection.sink)
        result = plan.plan(app, selection)
    for line in plan.lines(result):
        print(redaction.redact(line))
    return ExitCode.OK


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


# --- the ledger's views --------------------------------------------------------------------------------------


@_guarded
def cmd_status(args: argparse.Namespace, env: Environment) -> int:
    """Files by state and destination, what is due, the last runs, the common errors, a route change's effect."""
    with App.build(env) as app:
        app.ledger.migrate()
        snap = reports.status(app.ledger, runs=args.runs, errors=args.errors, problems=args.limit,
                              routes=app.config.routes, sinks_for=app.routes.sinks_for)
    print(redaction.redact(reports.dumps(snap)) if args.json else report.status_text(snap))
    return ExitCode.OK


@_guarded
def cmd_runs(args: argparse.Namespace, env: Environment) -> int:
    """The run history."""
    with App.build(env) as app:
        app.ledger.migrate()
        records = reports.runs(app.ledger, args.limit)
    print(redaction.redact(reports.dumps(records)) if args.json else report.runs_text(records))
    return ExitCode.OK


@_guarded
def cmd_report(args: argparse.Namespace, env: Environment) -> int:
    """Every file at every destination, as CSV or JSON lines, streamed."""
    with App.build(env) as app:
        app.ledger.migrate()
        rows = reports.report_rows(app.ledger, since=args.since, until=args.until, state=args.state,
                                   sink=args.sink, run_id=args.run)
        write = report.write_json_lines if args.json_lines else report.write_csv
        if args.output in (None, "-"):
            write(rows, sys.stdout)
            return ExitCode.OK
        target = Path(args.output)
        partial = target.with_name(target.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                n = write(rows, out)
            partial.replace(target)  # a report that stopped halfway never looks complete
        except OSError as exc:
            raise UsageError(f"--output {args.output}: {exc.strerror or exc}") from None
    print(f"{n} row(s) written to {target}", file=sys.stderr)
    return ExitCode.OK


@_guarded
def cmd_retry(args: argparse.Namespace, env: Environment) -> int:
    """Make the selected files due now."""
    ids = tuple(dict.fromkeys([*args.file_ids, *(args.file or [])]))
    selection = reports.RetrySelection(
        failed=args.failed, waiting=args.waiting, skipped=args.skipped, file_ids=ids,
        path_globs=tuple(args.path or ()), sink=args.sink, error_class=args.error_class, since=args.since,
        all_=args.all)
    if not selection.selects:
        raise UsageError("retry: name file ids, or select with --failed, --waiting, --skipped, --path, --sink, "
                         "--error-class, --since or --all (see filesync retry --help)")
    with App.build(env) as app:
        app.ledger.migrate()
        try:
            n = reports.retry(app.ledger, selection)
        except reports.UnknownFiles as exc:
            raise UsageError(f"retry: {exc}; nothing was changed") from None
        left = {fid: state for fid, state in reports.states_of(app.ledger, ids).items()
                if state not in ("pending",)} if ids else {}
    print(f"{n} file(s) queued again" + ("" if n else " (nothing matched the selection)"))
    for fid, state in left.items():
        print(f"  {fid}: {state.replace('_', ' ')}, not retried")
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
        print(f"hint: no partial index of the app's table serves 'not yet copied' (copied IS NOT TRUE); on a large "
              f"table run:\n  {hint};")
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
        _print_settings(cls.SETTINGS)
    return ExitCode.OK


def _print_settings(settings: Sequence[Setting]) -> None:
    """A plug-in's settings, one line each, for `filesync sinks` and `filesync sources`."""
    for s in settings:
        flags = ["required" if s.required else f"default {s.default!r}" if s.default else "optional"]
        if s.secret:
            flags.append("secret")
        print(f"    {s.env:<28} {'; '.join(flags):<22} {s.help}")


def cmd_sources(args: argparse.Namespace) -> int:
    """Installed sources with their settings."""
    for name in sorted(ep.name for ep in entry_points(group=sources.GROUP)):
        try:
            cls = sources.load(name)
        except ConfigError as exc:
            print(f"{name}: unavailable ({exc})")
            continue
        about = (sys.modules[cls.__module__].__doc__ or cls.__name__).strip().splitlines()[0]
        print(f"{name}  ({about.rstrip('.')})")
        _print_settings(cls.SETTINGS)
    return ExitCode.OK


@_guarded
def cmd_scan(args: argparse.Namespace, env: Environment) -> int:
    """The source's listing into the catalog."""
    if args.source:
        env = Environment({**dict(env), "FILESYNC_SOURCE": args.source}, env_file=os.devnull)
    _configure_logging(env, console=True, console_level="WARNING")
    with App.build(env) as app:
        app.ledger.migrate()
        counts = scan(app, args.prefix)
        if counts is None:
            print("another worker is scanning right now; its scan serves this one")
            return ExitCode.OK
        objects, gone, skipped, copied = app.ledger.catalog_counts()
    print(f"scanned {counts.listed} object(s): {counts.added} new, {counts.changed} changed, {counts.gone} gone, "
          f"{counts.skipped} without bytes to copy (skipped)")
    print(f"catalog: {objects} object(s), {copied} copied, {gone} gone, {skipped} skipped")
    return ExitCode.OK


@_guarded_own_settings
def cmd_demo(args: argparse.Namespace, env: Environment) -> int:
    """Seed sample files and run the real pipeline into a local folder: no cloud account needed."""
    return demo.main(env)


# --- the command line ------------------------------------------------------------------------------------------

_FORMAT = argparse.RawDescriptionHelpFormatter

_RUN = """\
One pass over the due files: new rows of the app's table are enqueued, due files are copied to every
destination their route names, the summary says what happened, the exit code says how it went.

At a terminal a live display shows files and bytes done of the total, files/s, MB/s, the ETA, counts per
destination, retries, failures, the files in flight and any destination that is rate-limited or stopped.
Elsewhere (cron, containers) a `run_progress` JSON event is logged every FILESYNC_PROGRESS_SECONDS.
Files that failed transiently are tried again at the end (FILESYNC_RUN_RETRIES passes).

examples:
  filesync run                                  # everything due
  filesync run --dry-run                        # what would be copied where, and why not; changes nothing
  filesync run --path 'photos/2024/**' --limit 100
  filesync run --since 2024-01-01 --until 2024-07-01 --sink cloudflare-images
  filesync run --file 42 --file 43              # only these ids (also: --files-from ids.txt, - for stdin)
  filesync run --max-duration 2h --max-transfer 50G   # stop claiming past either; exit code 7
"""

_STATUS = """\
The ledger at a glance: files per state (due now, in progress, waiting to retry, done, skipped, failed)
and per destination, the oldest due file, the next retry, the last runs with counts and durations, the
most common current errors with a count each, rows of the app's table without an id, and, when
FILESYNC_ROUTES changed since the last run, how many already-copied files the backfill will send.

examples:
  filesync status
  filesync status --json | jq .files
"""

_RUNS = """\
The run history from the ledger, newest first: start, duration, status (ok, failed, interrupted, error,
running, abandoned: its process died before finishing it), counts, bytes and worker.

examples:
  filesync runs
  filesync runs --limit 100 --json
"""

_REPORT = """\
Every file at every destination, one row each: file id, source path, kind, destination, state, remote id,
public URL, bytes, attempts, last error class and message, time copied. A file with no transfer yet has
one row without a destination. Streamed from the database, so a million rows do not fill memory.

examples:
  filesync report --csv --output files.csv
  filesync report --csv --state failed                      # what needs a look, with reasons
  filesync report --json-lines --sink bunny --since 2024-06-01
  filesync report --csv --run 1234                          # the files run 1234 handled (filesync runs)
"""

_RETRY = """\
Make the selected files due now and say how many. Parked (failed) and skipped files start over with fresh
attempts, and their parked destinations are tried again; waiting files keep their attempts. Files being
copied right now are left alone. A file id the ledger does not hold is an error (exit 2).
Without a state option: named ids are retried in any of those states; filters select failed and waiting
files; --all alone selects every failed file.

examples:
  filesync retry 42 43                    # these files
  filesync retry --all                    # every parked file
  filesync retry --waiting                # do not wait for the backoff
  filesync retry --failed --error-class server --sink bunny --since 2024-06-01
  filesync retry --path 'photos/2024/**'
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an unexpected error")
    return common


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each subcommand's own (for its usage on a usage error)."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="filesync", formatter_class=_FORMAT,
        description="Copy media listed in PostgreSQL from a bucket to Cloudflare Images/Stream and other sinks.",
        epilog="`filesync COMMAND --help` explains a command with examples. Exit codes: README.md.",
    )
    parser.add_argument("--version", action="version", version=f"filesync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help, parents=[common],
                           formatter_class=_FORMAT)
        subs[name] = p
        return p

    p = add("run", "one pass over the due files, then exit", _RUN)
    p.add_argument("-q", "--quiet", action="store_true", help="no display and no summary (cron)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be copied where, and why the others would not; change nothing")
    g = p.add_argument_group("which files (rclone-style filters; all must match)")
    g.add_argument("--limit", type=positive, metavar="N", help="take at most N files")
    g.add_argument("--since", type=when, metavar="DATE", help="dateTaken on or after DATE")
    g.add_argument("--until", type=when, metavar="DATE", help="dateTaken before DATE")
    g.add_argument("--path", action="append", metavar="GLOB",
                   help="source path matches GLOB (`*` within a folder, `**` across); repeatable")
    g.add_argument("--sink", metavar="NAME", help="only transfers to this destination")
    g.add_argument("--file", action="append", metavar="ID", help="only this file id; repeatable")
    g.add_argument("--files-from", metavar="FILE", help="only the ids in FILE, one a line (`-`: stdin)")
    g = p.add_argument_group("cut-offs (in-flight transfers finish, the rest stays due; exit code 7)")
    g.add_argument("--max-duration", type=duration, metavar="DURATION", help="stop claiming after e.g. 30m, 2h")
    g.add_argument("--max-transfer", type=size, metavar="SIZE", help="stop claiming after sending e.g. 10G")
    p.set_defaults(func=cmd_run)

    add("daemon", "run on FILESYNC_SCHEDULE until stopped",
        "Run on FILESYNC_SCHEDULE until SIGTERM, serving /healthz and /metrics on FILESYNC_HTTP_PORT.\n\n"
        "example:\n  FILESYNC_SCHEDULE='*/10 * * * *' filesync daemon").set_defaults(func=cmd_daemon)
    add("migrate", "create or upgrade filesync's tables",
        "Create or upgrade filesync's own tables (every run does this too) and nothing else.\n\n"
        "example:\n  filesync migrate").set_defaults(func=cmd_migrate)

    p = add("status", "files by state and destination, due files, last runs, common errors", _STATUS)
    p.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="latest problem files shown (default 20)")
    p.add_argument("--runs", type=int, default=5, metavar="N", help="last runs shown (default 5)")
    p.add_argument("--errors", type=int, default=5, metavar="N", help="most common errors shown (default 5)")
    p.set_defaults(func=cmd_status)

    p = add("runs", "the run history", _RUNS)
    p.add_argument("--limit", type=positive, default=20, metavar="N", help="runs shown (default 20)")
    p.add_argument("--json", action="store_true", help="a JSON list, for scripts")
    p.set_defaults(func=cmd_runs)

    p = add("report", "every file at every destination, as CSV or JSON lines", _REPORT)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row (opens in a spreadsheet)")
    fmt.add_argument("--json-lines", action="store_true", help="one JSON object per line")
    p.add_argument("--since", type=when, metavar="DATE", help="rows changed on or after DATE")
    p.add_argument("--until", type=when, metavar="DATE", help="rows changed before DATE")
    p.add_argument("--run", type=positive, metavar="ID", help="the files that run recorded an outcome for")
    p.add_argument("--state", choices=reports.STATES, metavar="STATE",
                   help=f"only rows in this state: {', '.join(reports.STATES)}")
    p.add_argument("--sink", metavar="NAME", help="only this destination")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_report)

    p = add("retry", "make selected files due now (parked ones start over)", _RETRY)
    p.add_argument("file_ids", nargs="*", metavar="ID", help="file ids to retry")
    p.add_argument("--file", action="append", metavar="ID", help="a file id to retry; repeatable")
    p.add_argument("--failed", action="store_true", help="parked files")
    p.add_argument("--waiting", action="store_true", help="files waiting for their next attempt")
    p.add_argument("--skipped", action="store_true", help="skipped files (inspected and routed again)")
    p.add_argument("--path", action="append", metavar="GLOB", help="source path matches GLOB; repeatable")
    p.add_argument("--sink", metavar="NAME", help="files whose transfer to this destination is not done")
    p.add_argument("--error-class", metavar="CLASS",
                   help="last error of this class: network, timeout, client, server, rate_limited, not_found, "
                        "invalid, unsupported")
    p.add_argument("--since", type=when, metavar="DATE", help="failed (last changed) on or after DATE")
    p.add_argument("--all", action="store_true", help="every file the state options select (default: failed)")
    p.set_defaults(func=cmd_retry)

    p = add("verify", "re-check that copied files exist at their destinations",
            "Re-check that copied files exist at their destinations (one lookup each, never a listing).\n\n"
            "examples:\n  filesync verify --sample 100\n  filesync verify --sink bunny --since 2024-06-01 --repair")
    p.add_argument("--sample", type=int, default=None, help="check N random copies instead of all")
    p.add_argument("--since", default=None, help="only copies made since this ISO date/time")
    p.add_argument("--sink", default=None, help="only this destination")
    p.add_argument("--repair", action="store_true", help="queue drifted files again")
    p.set_defaults(func=cmd_verify)
    add("check", "validate settings and reach every destination",
        "Validate every setting, check the app's table and columns, and make one harmless authenticated call "
        "to the database, the source and every routed destination; prints a table (exit 5 if any fails).\n\n"
        "example:\n  filesync check").set_defaults(func=cmd_check)
    add("sinks", "list installed sinks and their settings",
        "Installed destinations, what they accept, and their settings.\n\nexample:\n  filesync sinks"
        ).set_defaults(func=cmd_sinks)
    add("sources", "list installed sources and their settings",
        "Installed sources (FILESYNC_SOURCE picks one) and their settings.\n\nexample:\n  filesync sources"
        ).set_defaults(func=cmd_sources)
    p = add("scan", "list the source into filesync's catalog (no app table needed)",
            "List the source and record every object in filesync's catalog: new ones added, changed ones "
            "(ETag, size) updated so the next run copies them again, gone ones marked. A second scan of an "
            "unchanged source writes nothing. With FILESYNC_CATALOG=true every run scans first and takes its "
            "work from the catalog.\n\nexamples:\n  FILESYNC_CATALOG=true filesync scan --prefix photos/\n"
            "  FILESYNC_SOURCE=gdrive GDRIVE_FOLDER=<link> FILESYNC_CATALOG=true filesync scan")
    p.add_argument("--source", metavar="NAME", help="the source to list (default FILESYNC_SOURCE)")
    p.add_argument("--prefix", metavar="P", help="only keys starting with P (default FILESYNC_SCAN_PREFIX)")
    p.set_defaults(func=cmd_scan)
    add("demo", "seed sample files and sync them to a local folder",
        "Seed sample files and run the real pipeline into a local folder on the embedded PostgreSQL: no cloud "
        "account needed.\n\nexample:\n  filesync demo").set_defaults(func=cmd_demo)
    return parser, subs


def main(argv: Sequence[str] | None = None) -> int:
    parser, subs = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return ExitCode.OK
    if extra:  # the subcommand's usage, not the top level's: it is the one that lists the options
        subs[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `filesync status | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
