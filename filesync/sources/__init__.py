"""Where the bytes come from: one small interface, one file per source, found through entry points."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, BinaryIO, ClassVar, Protocol

from filesync.errors import ConfigError
from filesync.model import SKIP, Entry

__all__ = ["GROUP", "SKIP", "Entry", "ObjectInfo", "Source", "SourceContext", "load"]
from filesync.settings import Setting

GROUP = "filesync.sources"


@dataclass(frozen=True)
class SourceContext:
    """What the engine hands every source besides its own settings."""

    http_timeout: float = 120.0
    concurrency: int = 4


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None = None
    etag: str | None = None


class Source(Protocol):
    """Reads objects by key. Raises SourceNotFound for a missing key, SourceError otherwise."""

    name: ClassVar[str]
    #: The source's typed settings: a frozen dataclass of `filesync.settings.setting` fields.
    Settings: ClassVar[type[Any]]
    SETTINGS: ClassVar[tuple[Setting, ...]]  # settings_of(Settings)

    @classmethod
    def from_settings(cls, values: Any, context: SourceContext | None = None) -> Source:
        """Build from an instance of `Settings`, already validated (`Environment.load`)."""

    def check(self) -> None:
        """Reach the source once; SourceUnavailable with a reason if it cannot be reached."""

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Every object whose key starts with `prefix` (a plain string prefix, not a folder), once each.

        Streams page by page: a million objects are never held at once. A transient error on one page is
        retried there (restarting a long listing costs more); SourceUnavailable when the source as a whole
        cannot be listed, so a failed listing is never mistaken for an empty one.
        """

    def open_with_info(self, key: str) -> tuple[ObjectInfo, BinaryIO]:
        """The object's facts and a stream of it from its first byte, in one request where the source
        allows it (S3: one GET gives both): inspection and the first transfer share it."""

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
