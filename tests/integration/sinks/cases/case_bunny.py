"""The Bunny Edge Storage sink under the conformance suite, against FakeBunny over a real socket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from filesync.sinks.bunny import BunnySink
from filesync.testing.fakes.bunny import FakeBunny
from filesync.testing.sink_conformance import SinkCase

BAD_KEY = "not-the-zone-password-0000"


def make(fake: Any, bad_credentials: bool = False) -> BunnySink:
    key = BAD_KEY if bad_credentials else fake.access_key
    return BunnySink(fake.zone, key, endpoint=fake.url, pull_zone="filesync-test.b-cdn.net", timeout=10.0)


def secrets(fake: Any) -> Sequence[str]:
    return [fake.access_key, BAD_KEY]


CASE = SinkCase(name="bunny", fake=FakeBunny, make=make, secrets=secrets)
