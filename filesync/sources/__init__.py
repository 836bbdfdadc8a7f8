"""Where the bytes come from: one small interface, one file per source, found through entry points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, BinaryIO, ClassVar, Protocol

from filesync.config import Setting
from filesync.errors import ConfigError

GROUP = "filesync.sources"


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None = None
    etag: str | None = None


class Source(Protocol):
    """Reads objects by key. Raises SourceNotFound for a missing key, SourceError otherwise."""

    name: ClassVar[str]
    SETTINGS: ClassVar[tuple[Setting, ...]]

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> Source: ...

    def check(self) -> None:
        """Reach the source once; SourceUnavailable with a reason if it cannot be reached."""

    def stat(self, key: str) -> ObjectInfo: ...

    def read_head(self, key: str, n: int) -> bytes:
        """The first `n` bytes (fewer for a smaller object), for type sniffing."""

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """A forward-only stream of the object from `offset`; the caller closes it."""

    def close(self) -> None: ...


def load(name: str) -> type[Source]:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in eps:
        raise ConfigError(f"FILESYNC_SOURCE={name!r} is invalid: use one of {', '.join(sorted(eps))}")
    return eps[name].load()  # type: ignore[no-any-return]
