"""The Cloudinary sink under the conformance suite: the official SDK against FakeCloudinary over a real socket."""

from __future__ import annotations

from typing import Any

from filesync.sinks.cloudinary import MIN_CHUNK, CloudinarySink, cloudinary_account
from filesync.testing.fakes.cloudinary import FakeCloudinary
from filesync.testing.sink_conformance import SinkCase


def make(fake: Any, bad_credentials: bool = False) -> CloudinarySink:
    secret = "not-the-api-secret" if bad_credentials else fake.api_secret
    account = cloudinary_account(f"cloudinary://{fake.api_key}:{secret}@{fake.cloud}?upload_prefix={fake.url}")
    # The smallest chunk Cloudinary allows, so the suite's large bodies take the chunked path.
    return CloudinarySink(account, chunk_bytes=MIN_CHUNK, timeout=10.0)


CASE = SinkCase(name="cloudinary", fake=FakeCloudinary, make=make)
