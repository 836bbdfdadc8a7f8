"""The Cloudflare Images sink under the conformance suite, against FakeCloudflare over a real socket."""

from __future__ import annotations

from typing import Any

from filesync.sinks._cloudflare import CloudflareAccount
from filesync.sinks.cloudflare_images import CloudflareImagesSink
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import SinkCase

BAD_TOKEN = "not-the-cloudflare-token"


def make(fake: Any, bad_credentials: bool = False) -> CloudflareImagesSink:
    token = BAD_TOKEN if bad_credentials else fake.token
    account = CloudflareAccount(account_id=fake.account_id, token=token, api_base=fake.api_base, rps=200.0)
    return CloudflareImagesSink(account, timeout=30.0)


CASE = SinkCase(
    name="cloudflare-images",
    fake=lambda: FakeCloudflare().images,
    make=make,
    secrets=lambda fake: [fake.token, BAD_TOKEN],
)
