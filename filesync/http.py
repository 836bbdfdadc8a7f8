"""One way to talk HTTP: sessions with timeouts and shared pacing, and status codes turned into our errors.

Every sink built on `requests` takes its session from `make_session`, so timeouts, the User-Agent,
connection pooling and pacing are the same everywhere, and tests only have to point the base URL at a
fake server. Pacing is per limit, not per sink: a session gets one `Pacer` (a service's account-wide
budget) or a `PacerChoice` that picks one per request (a host whose limit is per token), so a 429 pauses
only the budget it was about.
"""

from __future__ import annotations

import contextlib
import email.utils
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from filesync import __version__
from filesync.errors import (
    ErrorClass,
    NetworkError,
    PermanentError,
    RateLimited,
    ServerError,
    SinkError,
    SinkTimeout,
)

USER_AGENT = f"filesync/{__version__}"
#: Statuses worth another try; 524 is Cloudflare's "origin timed out".
TRANSIENT_STATUSES = frozenset({408, 425, 500, 502, 503, 504, 520, 521, 522, 523, 524})
CONNECT_TIMEOUT = 10.0


class Pacer:
    """A token bucket shared by every transfer to one service, plus a pause that a 429 imposes on all.

    Cloudflare blocks an account for five minutes once it exceeds 1,200 requests per five minutes,
    so requests are spaced before they are sent rather than retried after the block.
    """

    def __init__(
        self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting, for metrics and benchmarks
        self.granted = 0  # requests let through
        self.pauses = 0  # 429s that paused it

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    delay = self._paused_until - now
                else:
                    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1:
                        self._tokens -= 1
                        self.granted += 1
                        return
                    delay = (1 - self._tokens) / self.rate
                self.waited += delay
            self._sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every caller back for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0
            self.pauses += 1


#: Picks the pacer of one request (by its host, its credentials), or None to send it unpaced.
PacerChoice = Callable[[requests.PreparedRequest], "Pacer | None"]


_pacers: dict[tuple[str, float, int], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer(service: str, rate: float, burst: int = 1) -> Pacer:
    """The process-wide pacer of one service at one rate: every sink of that service shares it."""
    key = (service, rate, burst)
    with _pacers_lock:
        if key not in _pacers:
            _pacers[key] = Pacer(rate, burst)
        return _pacers[key]


class _Adapter(HTTPAdapter):
    """Applies the default timeout and the pacer to every request of a session; a 429 pauses the pacer
    the request went through, and only that one."""

    def __init__(self, timeout: float, pacer: Pacer | PacerChoice | None, pool: int) -> None:
        super().__init__(pool_connections=pool, pool_maxsize=pool)
        self._timeout = timeout
        self._pacer = pacer

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (CONNECT_TIMEOUT, self._timeout)
        chosen = self._pacer(request) if callable(self._pacer) else self._pacer
        if chosen is not None:
            chosen.acquire()
        response = super().send(request, **kwargs)
        if chosen is not None and response.status_code == 429:
            chosen.pause(retry_after(response.headers) or 1.0)
        return response


def make_session(
    *, timeout: float = 120.0, pacer: Pacer | PacerChoice | None = None, pool: int = 16,
    headers: Mapping[str, str] | None = None,
) -> requests.Session:
    session = requests.Session()
    adapter = _Adapter(timeout, pacer, pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    if headers:
        session.headers.update(headers)
    return session


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(status: int, reason: str, *, sink: str, headers: Mapping[str, str] | None = None) -> SinkError:
    """The one place an HTTP status becomes an error class."""
    reason = reason.strip()[:300] or f"HTTP {status}"
    if status == 429:
        return RateLimited(reason, retry_after=retry_after(headers or {}), sink=sink, status=status)
    if status in TRANSIENT_STATUSES:
        if status == 408:
            return SinkTimeout(reason, sink=sink, status=status)
        return ServerError(reason, sink=sink, status=status)
    if status == 404:
        return PermanentError(reason, sink=sink, status=status, error_class=ErrorClass.NOT_FOUND)
    if 400 <= status < 500:
        return PermanentError(reason, sink=sink, status=status, error_class=ErrorClass.CLIENT)
    return ServerError(reason, sink=sink, status=status)


def raise_for_status(
    response: requests.Response, *, sink: str, reason: Callable[[requests.Response], str] | None = None
) -> None:
    if response.status_code < 400:
        return
    text = reason(response) if reason else response.text
    raise error_for_status(response.status_code, text, sink=sink, headers=response.headers)


def translate(exc: requests.RequestException, *, sink: str) -> SinkError:
    """requests' own exceptions (no response) as our transient errors."""
    if isinstance(exc, requests.Timeout):
        return SinkTimeout(f"timed out: {type(exc).__name__}", sink=sink)
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return NetworkError(f"connection failed: {type(exc).__name__}", sink=sink)
    return NetworkError(f"request failed: {type(exc).__name__}", sink=sink)


@contextlib.contextmanager
def translated(sink: str) -> Iterator[None]:
    """Run a block of `requests` calls with their exceptions translated."""
    try:
        yield
    except requests.RequestException as exc:
        raise translate(exc, sink=sink) from exc
