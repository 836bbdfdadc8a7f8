"""The s3 source under the conformance suite, on the session's moto server (the `s3` fixture of
tests/conftest.py: a new bucket per test).

Listing requests are counted with a botocore event hook on the case's own client. moto cannot
answer with a scripted fault, so the store says `supports_faults = False` and the suite skips the
error tests by that; botocore's standard retry mode is what covers transient errors on S3.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from filesync.sources.s3 import S3Source, boto_config
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
    client = boto3.client("s3", endpoint_url=store.server.endpoint, region_name=store.server.region,
                          aws_access_key_id="test-key", aws_secret_access_key=SECRET, config=boto_config(pool=4))
    client.meta.events.register("before-call.s3.ListObjectsV2", store.count_listing)
    bucket = f"{store.server.bucket}-missing" if broken else store.server.bucket
    return S3Source(client, bucket, page_size=page_size)


CASE = SourceCase(name="s3", store=store, make=make, secrets=lambda store: [SECRET])
