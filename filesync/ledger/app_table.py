"""The app's table as the settings name it: does it exist, with every column of a type filesync can use?

`filesync check` prints what `problems` finds; `explained` turns the driver's "relation/column does not
exist" at enqueue into a configuration error that names the setting and what the table has, because
the fix is a setting (or the app's schema), not the network.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from filesync.errors import LedgerError
from filesync.ledger.db import Database
from filesync.settings import AppTable, ConfigProblems

_TEXT = frozenset({"text", "character varying", "character", "citext"})
_INTEGER = frozenset({"smallint", "integer", "bigint"})
_TIMES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})


@dataclass(frozen=True)
class Column:
    """One configured column: the AppTable field, its setting, and the types the queries can use."""

    field: str
    setting: str
    types: frozenset[str]
    wanted: str


COLUMNS = (
    Column("id", "FILESYNC_ID_COLUMN", _TEXT | _INTEGER | {"uuid"}, "text, uuid or an integer"),
    Column("path", "FILESYNC_PATH_COLUMN", _TEXT, "text"),
    Column("date_taken", "FILESYNC_DATE_TAKEN_COLUMN", _TIMES | _TEXT, "timestamptz, timestamp, date or text"),
    Column("gps", "FILESYNC_GPS_COLUMN", _TEXT | {"point", "json", "jsonb"}, "text, point or json"),
    Column("copied", "FILESYNC_COPIED_COLUMN", frozenset({"boolean"}), "boolean"),
)

#: Driver errors at enqueue that a wrong table, column or column type explains.
_EXPLAINED = (errors.UndefinedTable, errors.UndefinedColumn, errors.DatatypeMismatch, errors.UndefinedFunction)
_SHOWN = 12  # names listed in a message before "..."


def _names(names: list[str], near: str) -> str:
    """Names for a message: the closest to `near` first, at most _SHOWN of them."""
    close = difflib.get_close_matches(near, names, n=3, cutoff=0.6)
    ordered = close + [n for n in names if n not in close]
    shown = ", ".join(ordered[:_SHOWN]) + (", ..." if len(ordered) > _SHOWN else "")
    return shown or "none"


def problems(db: Database, app: AppTable, schema: str | None = None) -> list[str]:
    """One line per problem with the app's table and columns, each naming its setting; [] when usable.

    `schema` is filesync's own schema, left out of the tables listed when the app's table is missing.
    """
    table_setting = f"FILESYNC_FILES_TABLE={'.'.join(app.table)!r}"
    with db.transaction() as conn:
        found = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)",
            (sql.Identifier(*app.table).as_string(conn),),
        ).fetchone()
        if found is None:
            return [f"{table_setting}: no such table; tables here: {_names(_tables(conn, app, schema), app.table[-1])}"]
        table_schema, table_name = found
        columns = {
            name: (udt if data_type == "USER-DEFINED" else data_type)
            for name, data_type, udt in conn.execute(
                "SELECT column_name, data_type, udt_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (table_schema, table_name),
            )
        }
    shown_table = table_name if len(app.table) == 1 else f"{table_schema}.{table_name}"
    found_problems = []
    for column in COLUMNS:
        name = getattr(app, column.field)
        setting = f"{column.setting}={name!r}"
        if name not in columns:
            found_problems.append(f"{setting}: table {shown_table!r} has no such column; its columns: "
                                  f"{_names(list(columns), name)}")
        elif columns[name] not in column.types:
            found_problems.append(f"{setting}: the column is {columns[name]}; filesync needs {column.wanted}")
    return found_problems


def _tables(conn: psycopg.Connection[Any], app: AppTable, own_schema: str | None) -> list[str]:
    """The tables the user could have meant: in the named schema, else in the search path."""
    if len(app.table) == 2:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema = %s ORDER BY 1", (app.table[0],))
    else:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = ANY(current_schemas(false)) AND table_schema IS DISTINCT FROM %s ORDER BY 1",
            (own_schema,))
    return [r[0] for r in rows]


@contextlib.contextmanager
def explained(db: Database, app: AppTable, schema: str | None = None) -> Iterator[None]:
    """A database error that a missing table or column (or one of the wrong type) explains becomes a
    ConfigError naming the settings (ConfigProblems when several); any other error passes unchanged."""
    try:
        yield
    except LedgerError as exc:
        if not isinstance(exc.__cause__, _EXPLAINED):
            raise
        try:
            found = problems(db, app, schema)
        except LedgerError:
            raise exc from exc.__cause__
        if not found:
            raise
        raise ConfigProblems(found) from None
