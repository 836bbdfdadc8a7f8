"""The one retry policy for requests within a run: transient errors only, backoff with jitter, Retry-After.

Sinks classify errors and never sleep or loop; this module loops (rclone's pacer split).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from filesync.errors import RateLimited, SourceError, TransientError, classify

T = TypeVar("T")
log = structlog.get_logger("filesync.retrying")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, SourceError):
        return exc.transient
    return False


class _WaitRetryAfter:
    """Exponential backoff with full jitter, but never shorter than a 429's Retry-After."""

    def __init__(self, max_wait: float, base: float) -> None:
        self._exp = wait_random_exponential(multiplier=base, max=max_wait)
        self._max = max_wait

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self._exp(state))
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, max(self._max, exc.retry_after)))
        return wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    if exc is None:
        return
    error_class, status, _ = classify(exc)
    log.warning(
        "request_retry",
        attempt=state.attempt_number,
        error_class=str(error_class),
        status=status,
        error=str(exc),
        wait_s=round(state.upcoming_sleep, 2),
    )


def policy(attempts: int = 5, max_wait: float = 60.0, base: float = 1.0) -> Retrying:
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=_WaitRetryAfter(max_wait, base),
        before_sleep=_log_retry,
        reraise=True,
    )


def call(fn: Callable[[], T], *, attempts: int = 5, max_wait: float = 60.0, base: float = 1.0) -> T:
    """Run `fn`, retrying transient failures; the last error is raised as itself."""
    return policy(attempts, max_wait, base)(fn)
