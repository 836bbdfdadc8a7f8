"""Object names for path-based sinks (bunny, s3, local) from a template, refusing any that escape the root."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from pathlib import PurePosixPath

from filesync.errors import ErrorClass, PermanentError
from filesync.model import SourceObject
from filesync.paths import UnsafePath, safe_relative

DEFAULT_TEMPLATE = "{id}{ext}"
_FIELDS = {"id", "ext", "path", "name", "stem", "kind", "date"}


class _Date:
    """`{date:%Y/%m}` formats the capture date, or the upload date when there is none."""

    def __init__(self, value: datetime) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return self.value.strftime(spec or "%Y-%m-%d")


def validate_template(template: str) -> str:
    """Used as a Setting parser: unknown fields are a configuration error, not a runtime one."""
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in _FIELDS:
            raise ValueError(f"unknown field {{{field}}}; use {', '.join(sorted(_FIELDS))}")
    if not template.strip():
        raise ValueError("must not be empty")
    return template


def safe_name(name: str, *, sink: str) -> str:
    """`paths.safe_relative` for a destination: an unsafe name is a PermanentError before any request."""
    try:
        return safe_relative(name)
    except UnsafePath as exc:
        raise PermanentError(str(exc), sink=sink, error_class=ErrorClass.INVALID) from None


def object_name(template: str, obj: SourceObject, *, sink: str, prefix: str = "") -> str:
    path = PurePosixPath(obj.path)
    fields = {
        "id": obj.file_id,
        "ext": obj.ext,
        "path": obj.path,
        "name": path.name,
        "stem": path.stem,
        "kind": str(obj.kind),
        "date": _Date(obj.date_taken or datetime.now(UTC)),
    }
    name = safe_name(template.format(**fields), sink=sink)
    if prefix:
        name = safe_name(f"{prefix.strip('/')}/{name}", sink=sink)
    return name
