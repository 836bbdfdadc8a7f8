"""A seekable, bounded-memory view of a source object: seeking reopens the stream at the new offset.

tuspy and retried uploads need `seek`; object stores hand out forward-only streams. Reopening with
a ranged read costs one request per seek and never holds more than one read's worth of bytes.
"""

from __future__ import annotations

import io
import time
from typing import BinaryIO

from filesync.errors import BodyEndedEarly, SourceError
from filesync.sources import Source

#: The slowest a source stream may deliver before it is given up (bytes per second, over the whole rest of
#: the object): a server that trickles a byte at a time would otherwise keep one request alive for ever,
#: since each small read arrives within the socket timeout.
MIN_RATE = 16 * 1024


class TooSlow(SourceError):
    """The source delivered the object slower than MIN_RATE: worth another try, from where it stopped."""


#: The most one read asks of the stream: the driver returns a new bytes object that is then copied into the
#: caller's buffer, so a read of a whole 8 MiB part would briefly hold it twice. Callers loop on short reads.
READ_CHUNK = 1024 * 1024


class SeekableReader(io.RawIOBase):
    """`stream`: one already open at offset 0 (the GET that also inspected the object). `memo`: keep this
    many first bytes in memory, so the type sniffing and every later pass over the start (a retry, the
    next destination) read them without another request."""

    def __init__(self, source: Source, key: str, size: int, timeout: float = 120.0, *,
                 stream: BinaryIO | None = None, memo: int = 0) -> None:
        self._source = source
        self._key = key
        self._size = size
        self._timeout = timeout
        self._pos = 0
        self._stream = stream
        self._stream_pos = 0 if stream is not None else -1
        self._deadline = time.monotonic() + timeout + size / MIN_RATE
        self._memo = bytearray()
        self._memo_limit = memo
        self.bytes_read = 0
        self.opened = 1 if stream is not None else 0  # requests made to read the object

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._size:
            return 0
        if self._pos < len(self._memo):  # the first bytes, already read once
            n = min(len(buffer), len(self._memo) - self._pos)
            buffer[:n] = self._memo[self._pos:self._pos + n]
            self._pos += n
            return n
        if self._stream is None or self._stream_pos != self._pos:
            self._close_stream()
            self._stream = self._source.open(self._key, self._pos)
            self.opened += 1
            self._stream_pos = self._pos
            self._deadline = time.monotonic() + self._timeout + (self._size - self._pos) / MIN_RATE
        if time.monotonic() > self._deadline:
            self._close_stream()
            raise TooSlow(f"reading {self._key!r} is slower than {MIN_RATE // 1024} KiB/s (stopped at byte "
                          f"{self._pos} of {self._size})")
        want = min(len(buffer), self._size - self._pos, READ_CHUNK)
        try:
            data = self._stream.read(want)
        except SourceError:
            self._close_stream()
            raise
        except Exception as exc:  # botocore/urllib3 read errors mid-stream: worth another try
            self._close_stream()
            raise SourceError(f"reading {self._key!r} failed at byte {self._pos}: {type(exc).__name__}") from exc
        n = len(data)
        if n == 0:
            raise BodyEndedEarly(f"object {self._key!r}", self._pos, self._size)
        buffer[:n] = data
        if self._pos == len(self._memo) and len(self._memo) < self._memo_limit:
            self._memo += data[:self._memo_limit - len(self._memo)]
        self._pos += n
        self._stream_pos += n
        self.bytes_read += n
        return n

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            finally:
                self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()


def open_seekable(source: Source, key: str, size: int, buffer_size: int = 1024 * 1024,
                  timeout: float = 120.0) -> io.BufferedReader:
    """Full-length reads (`read(n)` returns n bytes until the end) over a SeekableReader."""
    return io.BufferedReader(SeekableReader(source, key, size, timeout), buffer_size=buffer_size)


class Borrowed(io.BufferedReader):
    """A buffered view of a reader that outlives it: closing the view leaves the reader open (the pipeline
    lends one reader to every attempt and destination of a file, and closes it at the end)."""

    def close(self) -> None:
        self.detach()


def borrow(reader: SeekableReader, buffer_size: int = 1024 * 1024) -> Borrowed:
    """`reader` from its start, buffered."""
    reader.seek(0)
    return Borrowed(reader, buffer_size=buffer_size)
