"""The seekable source reader: a body that trickles in must not keep one request alive for ever."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from filesync.errors import BodyEndedEarly
from filesync.sources import ObjectInfo
from filesync.sources.reader import TooSlow, open_seekable


class _Trickle(io.RawIOBase):
    """A stream that hands out one byte per `pause` seconds, as a misbehaving server would."""

    def __init__(self, data: bytes, pause: float) -> None:
        self._data = data
        self._pause = pause

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data:
            return 0
        time.sleep(self._pause)
        buffer[0] = self._data[0]
        self._data = self._data[1:]
        return 1


class _Source:
    """The Source methods the reader uses, serving one object from memory."""

    def __init__(self, data: bytes, pause: float, truncate: int = 0) -> None:
        self.data, self.pause, self.truncate = data, pause, truncate
        self.opened: list[int] = []

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(size=len(self.data))

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        self.opened.append(offset)
        body = self.data[offset:len(self.data) - self.truncate]
        return io.BufferedReader(_Trickle(body, self.pause)) if self.pause else io.BytesIO(body)


def _read_all(reader: io.BufferedReader) -> Iterator[bytes]:
    while chunk := reader.read(64):
        yield chunk


def test_a_trickling_body_is_given_up_after_its_deadline() -> None:
    source = _Source(b"x" * 4000, pause=0.02)  # 50 B/s: 80 s for the whole object
    started = time.monotonic()
    with open_seekable(source, "slow.jpg", 4000, buffer_size=64, timeout=0.2) as body:  # type: ignore[arg-type]
        with pytest.raises(TooSlow, match="slower than"):
            b"".join(_read_all(body))
    assert time.monotonic() - started < 30  # bounded, not the 80 s the trickle would take


def test_a_normal_body_reads_whole_and_a_short_one_says_so() -> None:
    data = bytes(range(256)) * 40
    with open_seekable(_Source(data, pause=0), "ok.jpg", len(data)) as body:  # type: ignore[arg-type]
        assert b"".join(_read_all(body)) == data
    with open_seekable(_Source(data, pause=0, truncate=10), "short.jpg", len(data)) as body:  # type: ignore[arg-type]
        with pytest.raises(BodyEndedEarly, match="10 short"):
            b"".join(_read_all(body))
