"""Named SQL blocks from the ledger's .sql files, composed with quoted identifiers (never string formatting).

`queries.sql` holds what the engine runs; other files (`reports.sql`: the read models of the console and
the status API) follow the same `-- name:` convention, each name followed by a one-line description.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from psycopg import sql

from filesync.settings import AppTable

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def raw_queries(filename: str = "queries.sql") -> dict[str, str]:
    """The named blocks of one .sql file of this package, by name."""
    text = files("filesync.ledger").joinpath(filename).read_text()
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def identifiers(schema: str, app: AppTable) -> dict[str, sql.Composable]:
    return {
        "schema": sql.Identifier(schema),
        "app": sql.Identifier(*app.table),
        "app_id": sql.Identifier(app.id),
        "app_path": sql.Identifier(app.path),
        "app_date": sql.Identifier(app.date_taken),
        "app_gps": sql.Identifier(app.gps),
        "app_copied": sql.Identifier(app.copied),
    }


class Queries:
    """All queries of one .sql file composed once for one schema and app table."""

    def __init__(self, schema: str, app: AppTable, filename: str = "queries.sql") -> None:
        names = identifiers(schema, app)
        self._composed = {
            name: sql.SQL(body).format(**{k: v for k, v in names.items() if "{" + k + "}" in body})
            for name, body in raw_queries(filename).items()
        }

    def __getitem__(self, name: str) -> sql.Composed:
        return self._composed[name]
