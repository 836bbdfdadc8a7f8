"""Requests, responses and the route table of the API: one declaration per endpoint.

Each `Route` carries its handler, who may call it and its documentation, so the router that serves a
request and the OpenAPI document that describes it read the same list and cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

JSON = "application/json"


class Access(StrEnum):
    """Who may call a route (the rules: filesync/api/auth.py)."""

    PUBLIC = "public"  # the page and the API's description: no data in them
    READ = "read"  # ledger data: loopback only, or the token once one is set
    WRITE = "write"  # changes state: always the token; disabled without one


class ApiError(Exception):
    """An answer other than success: `{"error": message}` with this status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)  # from the path: /api/files/{id}

    @classmethod
    def parse(cls, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Request:
        parts = urlsplit(target)
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key, value)  # the first of a repeated parameter
        return cls(method.upper(), parts.path or "/", query, {k.lower(): v for k, v in headers.items()}, body)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is `{}`); 400 for anything else."""
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, "the body must be a JSON object")
        return value

    def int_query(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
        return value

    def text_query(self, name: str) -> str | None:
        value = self.query.get(name, "").strip()
        return value or None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """JSON-ready values: datetimes as ISO 8601 text, tuples and sets as lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Param:
    """A query parameter, for the OpenAPI document."""

    name: str
    type: str  # "string" or "integer"
    description: str
    enum: Sequence[str] = ()


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/api/files/{id}": a {name} is one path segment
    handler: Handler
    access: Access
    summary: str
    description: str = ""
    query: Sequence[Param] = ()
    body: Mapping[str, Any] | None = None  # JSON Schema of the request body
    responses: Mapping[int, str] = field(default_factory=lambda: {200: "OK"})
    content_type: str = JSON
    documented: bool = True  # False for the page's own files: not part of the API

    def match(self, path: str) -> dict[str, str] | None:
        want = self.pattern.strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{") and w.endswith("}"):
                if not g:
                    return None
                params[w[1:-1]] = unquote(g)
            elif w != g:
                return None
        return params


def find(routes: Sequence[Route], method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route serving `method path`, with its path parameters; 404 or 405 when there is none."""
    allowed: list[str] = []
    for route in routes:
        params = route.match(path)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.append(route.method)
    if allowed:
        raise ApiError(405, f"{method} is not allowed here (use {', '.join(allowed)})",
                       headers={"Allow": ", ".join(allowed)})
    raise ApiError(404, f"no such endpoint: {path} (see /api/openapi.json)")
