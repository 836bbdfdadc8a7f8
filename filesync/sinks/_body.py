"""Reading a source body for a request: the helpers every sink shares, with one error for a short body.

`Counted` is what `requests` (and requests-toolbelt's multipart encoder) stream: `len()` is what is
left to send, reads never go past `length`, each read reports progress, and a body that ends early
raises `BodyEndedEarly` instead of sending a short request the service might accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol

from filesync.errors import BodyEndedEarly


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Counted:
    """The next `length` bytes of `body`, streamed piece by piece."""

    def __init__(self, body: _Readable, length: int, on_read: Callable[[int], None] | None = None,
                 *, sink: str = "", what: str = "source") -> None:
        self._body = body
        self._length = length
        self._left = length
        self._on_read = on_read
        self._sink = sink
        self._what = what

    def __len__(self) -> int:
        return self._left

    def read(self, n: int | None = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._body.read(want)
        if not data:
            raise BodyEndedEarly(self._what, self._length - self._left, self._length, sink=self._sink)
        self._left -= len(data)
        if self._on_read is not None:
            self._on_read(len(data))
        return data


def read_up_to(body: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the stream (raw streams may return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = body.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def fill_exactly(body: BinaryIO, buffer: bytearray, *, sink: str = "", what: str = "source") -> None:
    """Fill `buffer` whole from `body`, in place (a part buffer reused: no copy of it per part), or
    BodyEndedEarly."""
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = body.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise BodyEndedEarly(what, got, len(buffer), sink=sink)
        got += n


def read_exactly(body: BinaryIO, n: int, *, sink: str = "", what: str = "source") -> bytes:
    """Exactly `n` bytes, or BodyEndedEarly."""
    data = read_up_to(body, n)
    if len(data) < n:
        raise BodyEndedEarly(what, len(data), n, sink=sink)
    return data
