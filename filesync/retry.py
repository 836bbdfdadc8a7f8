"""The one retry decision, and the request loop that follows it.

Every error goes through `RetryPolicy.decide(error, tries=..., attempts=...)`:

- RETRY: transient, and this request has tries left in this run: wait `delay` (jittered exponential
  backoff, never shorter than a 429's Retry-After) and send it again;
- LATER: give up on the file for this run; it is due again after `delay` seconds (the backoff
  across runs, doubling per attempt, capped at a day), computed here and stored by the ledger;
- PARK: permanent, or out of attempts: record the reason, wait for an operator;
- STOP: the destination refuses the whole setup (credentials, quota): stop sending to it for the
  rest of the run, count no attempt against the file.

Sinks and sources classify errors and never sleep or loop (rclone's pacer split); `call` loops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import structlog

from filesync.errors import ErrorClass, RateLimited, classify

T = TypeVar("T")
log = structlog.get_logger("filesync.retry")

DAY = 86400.0


class Action(StrEnum):
    RETRY = "retry"
    LATER = "later"
    PARK = "park"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    action: Action
    error_class: ErrorClass
    status: int | None = None
    delay: float = 0.0  # RETRY: seconds before the next try; LATER: seconds until the file is due again

    @property
    def permanent(self) -> bool:
        return self.action is Action.PARK


@dataclass(frozen=True)
class RetryPolicy:
    """FILESYNC_REQUEST_RETRIES / _REQUEST_MAX_WAIT within a run; FILESYNC_MAX_ATTEMPTS /
    _RETRY_BACKOFF_SECONDS across runs."""

    request_tries: int = 5
    max_wait: float = 60.0
    base: float = 1.0
    max_attempts: int = 5
    backoff: float = 300.0
    backoff_cap: float = DAY
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def decide(self, error: BaseException, *, tries: int = 0, attempts: int = 0) -> Decision:
        """What to do after `error`, the `tries`-th failure of one request in this run, on a file that
        had failed `attempts` times in earlier runs."""
        error_class, status, transient = classify(error)
        if getattr(error, "stops_destination", False):
            return Decision(Action.STOP, error_class, status)
        if transient and tries < self.request_tries:
            return Decision(Action.RETRY, error_class, status, self._request_delay(error, tries))
        if not transient and error_class is not ErrorClass.INTERNAL:
            return Decision(Action.PARK, error_class, status)
        if attempts + 1 >= self.max_attempts:
            return Decision(Action.PARK, error_class, status)
        return Decision(Action.LATER, error_class, status, min(self.backoff_cap, self.backoff * 2**attempts))

    def _request_delay(self, error: BaseException, tries: int) -> float:
        """Full jitter over an exponential ceiling, but at least what a 429 asked for."""
        ceiling = min(self.max_wait, self.base * 2 ** max(0, tries - 1))
        delay: float = self.random() * ceiling
        if isinstance(error, RateLimited) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def call(self, fn: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep,
             on_retry: Callable[[BaseException, float], None] | None = None) -> T:
        """Run `fn`, sending it again while the policy says RETRY; otherwise its error is raised as itself."""
        tries = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                tries += 1
                decision = self.decide(exc, tries=tries)
                if decision.action is not Action.RETRY:
                    raise
                log.warning("request_retry", attempt=tries, error_class=str(decision.error_class),
                            status=decision.status, error=str(exc), wait_s=round(decision.delay, 2))
                if on_retry is not None:
                    on_retry(exc, decision.delay)
                sleep(decision.delay)
