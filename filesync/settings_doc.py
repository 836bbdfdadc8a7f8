"""`.env.example` and the README's settings table, generated from the declared settings so they never drift.

Regenerate with `python -m filesync.settings_doc env > .env.example` (a test compares the committed
file with this output) and `python -m filesync.settings_doc markdown` for the README table.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

from filesync.app import all_settings
from filesync.settings import Setting

HEADER = """\
# filesync settings. Copy to .env and fill in what your routes need; the environment wins over this file.
# Generated from the declared settings by `python -m filesync.settings_doc env > .env.example`.
# Lines left commented keep their default (shown). Secrets are marked; never commit a filled-in .env.
# docker compose hands this file to filesync as it is: DATABASE_URL is your app's database, where the
# "File" table lives (to try filesync on a bundled database instead, see POSTGRES_PASSWORD at the end).
"""

COMPOSE = """\
# --- docker compose (read by docker-compose.yml, not by filesync) ----------------------------------------
# Password of the bundled PostgreSQL, started only by `docker compose --profile local-db up -d`, for trying
# filesync out. With it, set DATABASE_URL=postgresql://filesync:<POSTGRES_PASSWORD>@postgres:5432/filesync
# POSTGRES_PASSWORD=change-me
# Host address:port publishing /healthz and /metrics.
# FILESYNC_HTTP_PUBLISH=127.0.0.1:9090
"""


def _settings() -> tuple[Setting, ...]:
    return all_settings()


def shown_default(setting: Setting) -> str | None:
    """The default as documented: machine-specific parts (home folder, host name) named, not copied."""
    value = setting.default
    if value is None:
        return None
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and value.startswith(xdg):
        value = "$XDG_DATA_HOME" + value[len(xdg):]
    home = str(Path.home())
    if home not in {"", "/"} and value.startswith(home):
        value = "~" + value[len(home):]
    if value == socket.gethostname():
        value = "<host name>"
    return value


def grouped(settings: Iterable[Setting]) -> list[tuple[str, list[Setting]]]:
    """Settings by group, groups in the order they are first declared."""
    groups: dict[str, list[Setting]] = {}
    for setting in settings:
        groups.setdefault(setting.group, []).append(setting)
    return list(groups.items())


def _notes(setting: Setting) -> list[str]:
    return [n for n in ("required" if setting.required else "", "secret" if setting.secret else "") if n]


def env_example(settings: Iterable[Setting] | None = None) -> str:
    """Every setting, grouped and commented: defaults commented out, the rest as empty placeholders."""
    lines = [HEADER]
    for group, members in grouped(settings if settings is not None else _settings()):
        lines.append(f"# --- {group} " + "-" * max(3, 100 - len(group)))
        for s in members:
            notes = _notes(s)
            lines.append(f"# {s.help}" + (f" ({', '.join(notes)})" if notes else ""))
            default = shown_default(s)
            lines.append(f"# {s.env}={default}" if default is not None else f"{s.env}=")
        lines.append("")
    lines.append(COMPOSE)
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(settings: Iterable[Setting] | None = None) -> str:
    """One row per setting: group, name, default, required/secret, meaning."""
    rows = ["| Group | Setting | Default | Notes | Meaning |", "| --- | --- | --- | --- | --- |"]
    for group, members in grouped(settings if settings is not None else _settings()):
        for s in members:
            default = shown_default(s)
            notes = ", ".join(_notes(s))
            shown = f"`{_cell(default)}`" if default else ""
            rows.append(f"| {_cell(group)} | `{s.env}` | {shown} | {notes} | {_cell(s.help)} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "env"
    if kind not in {"env", "markdown"}:
        print("usage: python -m filesync.settings_doc [env|markdown]", file=sys.stderr)
        return 2
    sys.stdout.write(env_example() if kind == "env" else markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
