"""Named SQL blocks from queries.sql, composed with quoted identifiers (never string formatting)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from psycopg import sql

from filesync.settings import AppTable

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def raw_queries() -> dict[str, str]:
    text = files("filesync.ledger").joinpath("queries.sql").read_text()
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
    """All queries composed once for one schema and app table."""

    def __init__(self, schema: str, app: AppTable) -> None:
        names = identifiers(schema, app)
        self._composed = {
            name: sql.SQL(body).format(**{k: v for k, v in names.items() if "{" + k + "}" in body})
            for name, body in raw_queries().items()
        }

    def __getitem__(self, name: str) -> sql.Composed:
        return self._composed[name]
