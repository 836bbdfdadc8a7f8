"""`/api/openapi.json`: the API described from the same route table that serves it, so they cannot drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from filesync import __version__
from filesync.api.routing import Access, Route

_ERROR = {"$ref": "#/components/schemas/Error"}


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """An OpenAPI 3.1 document of every documented route."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not route.documented:
            continue
        operation: dict[str, Any] = {
            "operationId": route.handler.__name__.strip("_"),
            "summary": route.summary,
            "responses": {
                str(status): {"description": text, "content": {route.content_type: {
                    "schema": _ERROR if status >= 400 else {"type": "object"}}}}
                for status, text in sorted(route.responses.items())
            },
        }
        if route.description:
            operation["description"] = route.description
        parameters = [
            {"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.pattern.split("/") if name.startswith("{")
        ]
        parameters += [
            {"name": p.name, "in": "query", "required": False, "description": p.description,
             "schema": {"type": p.type, **({"enum": list(p.enum)} if p.enum else {})}}
            for p in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
        if route.access is not Access.PUBLIC:
            operation["security"] = [{"bearer": []}]
            operation["x-filesync-access"] = str(route.access)
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "filesync daemon API",
            "version": __version__,
            "description": "Served by `filesync daemon` on FILESYNC_HTTP_HOST:FILESYNC_HTTP_PORT. POST endpoints need "
                           "`Authorization: Bearer <FILESYNC_HTTP_TOKEN>` and answer 403 while no token is set; "
                           "GET endpoints are open on a loopback address until a token is set, then need it too. "
                           "Errors are `{\"error\": \"...\"}`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the value of FILESYNC_HTTP_TOKEN"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
    }
