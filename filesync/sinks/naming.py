"""Object names for path-based sinks (bunny, s3, local) from a template, refusing any that escape the root."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from pathlib import PurePosixPath

from filesync.errors import ErrorClass, PermanentError
from filesync.model import SourceObject

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


def safe_relative(name: str, *, sink: str) -> str:
    """A clean relative POSIX path, or a PermanentError before any request is made."""
    if not name or "\x00" in name:
        raise PermanentError("object name is empty or contains NUL", sink=sink, error_class=ErrorClass.INVALID)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PermanentError(f"object name {name!r} is absolute", sink=sink, error_class=ErrorClass.INVALID)
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts) or any(p == "" for p in parts):
        raise PermanentError(
            f"object name {name!r} would escape the destination root", sink=sink, error_class=ErrorClass.INVALID
        )
    return "/".join(parts)


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
    name = safe_relative(template.format(**fields), sink=sink)
    if prefix:
        name = safe_relative(f"{prefix.strip('/')}/{name}", sink=sink)
    return name
