"""The gdrive source under the conformance suite, against FakeDrive (the Drive API v3 on a real socket).

Each source gets its own pacer and a fast retry policy, so a 429's pause or a retried page stays
within the test that caused it.
"""

from __future__ import annotations

import pytest

from filesync.http import Pacer
from filesync.retry import RetryPolicy
from filesync.sources.gdrive import GDriveSource
from filesync.testing.fakes.gdrive import FakeDrive
from filesync.testing.source_conformance import SourceCase

WRONG_KEY = "AIzaWrongKeyForTheConformanceSuite-0123"


def store(request: pytest.FixtureRequest) -> FakeDrive:
    fake = FakeDrive()
    fake.start()
    request.addfinalizer(fake.stop)
    return fake


def make(store: FakeDrive, *, page_size: int, broken: bool = False) -> GDriveSource:
    return GDriveSource(store.root_id, WRONG_KEY if broken else store.api_key, api_base=store.url,
                        page_size=page_size, timeout=10.0, pacer=Pacer(1000.0, burst=100),
                        retry=RetryPolicy(base=0.01, max_wait=0.1))


CASE = SourceCase(
    name="gdrive", store=store, make=make,
    transient_statuses=(429, 500, 503), permanent_statuses=(403, 400),
    secrets=lambda store: [store.api_key, WRONG_KEY],
)
