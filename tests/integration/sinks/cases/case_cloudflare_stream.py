"""The Cloudflare Stream sink under the conformance suite: tus against FakeCloudflare with Stream's real
chunk rules (5 MiB minimum, multiples of 256 KiB)."""

from __future__ import annotations

from typing import Any

from filesync.sinks._cloudflare import CloudflareAccount
from filesync.sinks.cloudflare_stream import CloudflareStreamSink
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import SinkCase

BAD_TOKEN = "not-the-cloudflare-token"
CHUNK = 5 * 1024 * 1024


def make(fake: Any, bad_credentials: bool = False) -> CloudflareStreamSink:
    token = BAD_TOKEN if bad_credentials else fake.token
    account = CloudflareAccount(account_id=fake.account_id, token=token, api_base=fake.api_base, rps=200.0)
    return CloudflareStreamSink(account, timeout=30.0, chunk_size=CHUNK)


CASE = SinkCase(
    name="cloudflare-stream",
    fake=lambda: FakeCloudflare().stream,
    make=make,
    secrets=lambda fake: [fake.token, BAD_TOKEN],
)
