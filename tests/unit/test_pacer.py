"""The shared limiter, on a simulated clock: the spacing it imposes and the pause a 429 puts on everyone."""

from __future__ import annotations

import itertools

from filesync.http import Pacer, pacer


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_requests_are_spaced_at_the_rate() -> None:
    clock = SimClock()
    limiter = Pacer(rate=4.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(9):
        limiter.acquire()
        times.append(clock.now)
    assert times[0] == 0.0
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.25] * 8


def test_a_429_pause_holds_back_every_caller() -> None:
    clock = SimClock()
    limiter = Pacer(rate=100.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.pause(30.0)  # one transfer got "Retry-After: 30"
    limiter.acquire()  # any other transfer's next request
    assert clock.now >= 30.0
    assert limiter.waited >= 30.0


def test_sinks_of_one_service_share_one_pacer_per_rate() -> None:
    assert pacer("svc-test", 3.5) is pacer("svc-test", 3.5)
    assert pacer("svc-test", 3.5) is not pacer("svc-test", 7.0)
