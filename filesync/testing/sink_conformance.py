"""The suite every sink must pass (our `fstests`). Shipped in the package so third-party sinks reuse it.

A `SinkCase` says how to start a fake of the sink's service and how to build the sink against it.
Fakes expose what they stored through `FakeStore`, so the suite can assert on what reached the
service (no duplicate, exact bytes, metadata) without knowing which service it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from filesync.sinks import Sink


@dataclass(frozen=True)
class StoredObject:
    """What a fake holds for one object."""

    key: str  # the remote id or object name the sink returned
    size: int
    sha256: str  # hex digest of the stored bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


class FakeStore(Protocol):
    """What the suite needs of every fake (HTTP fakes also subclass testing.fakes.base.FakeService)."""

    def stored(self) -> list[StoredObject]:
        """Every object currently held, one entry per object (duplicates show as two entries)."""

    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, times: int = 1) -> None: ...

    def corrupt_next(self) -> None:
        """Flip a byte of the next upload's body before the service checks it (checksum sinks only)."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class SinkCase:
    """One sink under the conformance suite."""

    name: str  # the sink's registry name
    fake: Callable[[], FakeStore]  # a new, not yet started fake
    make: Callable[..., Sink]  # make(fake, bad_credentials=False) -> Sink pointed at the fake
    known_failures: Mapping[str, str] = field(default_factory=dict)  # test name -> reason (strict xfail)
