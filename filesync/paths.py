"""Object keys and destination names that cannot escape their root: one rule for sources and sinks."""

from __future__ import annotations


class UnsafePath(ValueError):
    """A key or name that is empty, absolute, or would climb out of its root."""


def safe_relative(name: str) -> str:
    """`name` as a clean relative POSIX path (backslashes read as separators), or UnsafePath."""
    if not name or "\x00" in name:
        raise UnsafePath("object name is empty or contains NUL")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath(f"object name {name!r} is absolute")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts) or any(p == "" for p in parts):
        raise UnsafePath(f"object name {name!r} would escape the destination root")
    return "/".join(parts)
