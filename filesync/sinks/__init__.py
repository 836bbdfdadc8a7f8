"""The contract every destination implements, and the registry that finds them.

Built-in and third-party sinks register the same way: an entry point in the `filesync.sinks` group
(see pyproject.toml). A sink is loaded only when a route names it. `filesync.testing.sink_conformance`
is the suite every sink must pass; `sinks/local.py` is the reference whose layout the others copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any, BinaryIO, ClassVar, Protocol, runtime_checkable

from filesync.errors import ConfigError, Refused
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting

GROUP = "filesync.sinks"


@dataclass(frozen=True)
class Capabilities:
    """What a sink accepts and can do. Tests skip by these flags, never by sink name."""

    kinds: frozenset[Kind]
    max_bytes: int | None = None  # refused before any request, as a PermanentError
    max_dimension: int | None = None  # longest image side in pixels
    max_area: int | None = None  # image pixels (width x height)
    mimes: frozenset[str] | None = None  # accepted MIME types; None: any of `kinds`
    keeps_metadata: bool = False
    checksum: str | None = None  # "sha256", "md5" ... when the service verifies or reports one
    resumable: bool = False  # survives a process restart mid-upload (tus)


@dataclass(frozen=True)
class SinkContext:
    """What the engine hands every sink besides its own settings."""

    http_timeout: float = 120.0
    concurrency: int = 4


class UploadSession(Protocol):
    """Per-(file, sink) state the engine persists in the ledger before bytes move."""

    @property
    def resume_token(self) -> str | None:
        """A token saved by an earlier, interrupted attempt (e.g. a tus upload URL)."""

    def save_resume_token(self, token: str | None) -> None:
        """Persist (or clear) the token now: it must survive a SIGKILL right after this call."""

    def progress(self, nbytes: int) -> None:
        """`nbytes` more were sent; drives progress bars and the lease heartbeat."""

    @property
    def replace(self) -> bool:
        """The destination may hold an older copy of this file (its row changed, or its flag was reset):
        what is there must be replaced with these bytes, not counted as already done."""


@runtime_checkable
class Sink(Protocol):
    """A destination. Synchronous: the pipeline's thread pool provides concurrency."""

    name: ClassVar[str]
    #: The sink's typed settings: a frozen dataclass of `filesync.settings.setting` fields.
    Settings: ClassVar[type[Any]]
    SETTINGS: ClassVar[tuple[Setting, ...]]  # settings_of(Settings): for docs, redaction, `filesync sinks`
    capabilities: Capabilities

    @classmethod
    def from_settings(cls, values: Any, context: SinkContext) -> Sink:
        """Build from an instance of `Settings`, already validated (`Environment.load`)."""

    def check(self) -> None:
        """One harmless authenticated call. Raises ConfigError or SinkError with a reason."""

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        """Look the object up directly (by its id, name or the remote id a previous upload
        returned); never list or search. None when it is not there."""

    def name_of(self, obj: SourceObject) -> str | None:
        """The destination name `obj` takes where names come from a template (two files can map to one
        name, so the engine gives each name to one file id); None where the file id itself is the name."""

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        """Send exactly obj.size bytes read from `body` (seekable, positioned at 0). The engine has
        already checked `capabilities` (`check_accepts`): the sink need not check them again.

        Idempotent: a second upload of the same obj returns the first RemoteObject (with
        `existed=True`) and stores nothing new, unless `session.replace` asks for the bytes to be sent
        again over an older copy. An object at the name that belongs to another file is never
        overwritten. If `body` raises mid-stream no visible object is left behind, or the upload is
        resumable through `session`. Raises TransientError (retry) or PermanentError (record and move
        on); never returns a partial result.
        """

    def close(self) -> None:
        """Release connections."""


@cache
def registry() -> Mapping[str, EntryPoint]:
    """Every installed sink, by name; a duplicate name is an error, not a silent override."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            raise ConfigError(f"two sinks are named {ep.name!r}: {found[ep.name].value} and {ep.value}")
        found[ep.name] = ep
    return MappingProxyType(found)


def load(name: str) -> type[Sink]:
    eps = registry()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ConfigError(f"FILESYNC_ROUTES names an unknown sink {name!r} (known: {known})")
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise ConfigError(f"sink {name!r} cannot be loaded: {exc}") from exc
    return cls  # type: ignore[no-any-return]


def check_accepts(sink: str, caps: Capabilities, obj: SourceObject) -> None:
    """The one check that a destination takes an object, made before any request: Refused if not."""
    refusal = accepts(caps, obj)
    if refusal:
        raise Refused(refusal, sink=sink)


def accepts(caps: Capabilities, obj: SourceObject) -> str | None:
    """Why this sink refuses the object before any request, or None when it is acceptable."""
    if obj.kind not in caps.kinds:
        return f"{obj.kind} files are not accepted"
    if caps.mimes is not None and obj.mime not in caps.mimes:
        return f"type {obj.mime} is not accepted"
    if caps.max_bytes is not None and obj.size > caps.max_bytes:
        return f"{obj.size} bytes is over the limit of {caps.max_bytes} bytes"
    if obj.width and obj.height:
        if caps.max_dimension is not None and max(obj.width, obj.height) > caps.max_dimension:
            return f"{obj.width}x{obj.height} px is over the limit of {caps.max_dimension} px per side"
        if caps.max_area is not None and obj.width * obj.height > caps.max_area:
            return f"{obj.width}x{obj.height} px is over the limit of {caps.max_area} pixels"
    return None
