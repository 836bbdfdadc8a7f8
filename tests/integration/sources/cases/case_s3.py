"""The s3 source under the conformance suite, on the session's moto server (the `s3` fixture of
tests/conftest.py: a new bucket per test).

The source is built from its settings, as `filesync` builds it; listing requests are counted with a
botocore event hook on its client. moto cannot answer with a scripted fault, so the store says
`supports_faults = False` and the suite skips the error tests by that.
"""

from __future__ import annotations

from typing import Any

import pytest

from filesync.settings import Environment
from filesync.sources.s3 import S3Source
from filesync.testing.source_conformance import SourceCase

SECRET = "test-secret-value-0xS3"


class BucketStore:
    supports_faults = False

    def __init__(self, server: Any) -> None:
        self.server = server  # tests.conftest.S3Server
        self.listings = 0

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.server.put(key, data, content_type)

    def fail_next(self, status: int, *, times: int = 1) -> None:
        raise NotImplementedError("moto cannot script faults")

    def list_calls(self) -> int:
        return self.listings

    def count_listing(self, **kwargs: Any) -> None:
        self.listings += 1


def store(request: pytest.FixtureRequest) -> BucketStore:
    return BucketStore(request.getfixturevalue("s3"))


def make(store: BucketStore, *, page_size: int, broken: bool = False) -> S3Source:
    env = Environment({**store.server.env(), "SPACES_SECRET": SECRET}, env_file="/nonexistent")
    values = env.resolve(S3Source.SETTINGS)
    if broken:
        values["SPACES_BUCKET"] = f"{store.server.bucket}-missing"
    source = S3Source.from_settings(values)
    source.page_size = page_size
    source._client.meta.events.register("before-call.s3.ListObjectsV2", store.count_listing)
    return source


CASE = SourceCase(name="s3", store=store, make=make, secrets=lambda store: [SECRET])
