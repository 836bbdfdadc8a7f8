"""The sink conformance suite for Cloudflare Images on the batch path (issue 11), against FakeCloudflare's
batch host. Two cases: a sink that fetches its batch token on the first call (the suite's faults then hit
the token call), and one that already holds it, as in the middle of a run (the faults hit the batch host).

Outside tests/integration/sinks on purpose: that folder's conftest gives every test taking `case` the
registered sinks' cases; here `case` is the batch case.
"""

from __future__ import annotations

from typing import Any

import pytest

from filesync.sinks._cloudflare import CloudflareAccount
from filesync.sinks.cloudflare_images import CloudflareImagesSink
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import RecordingSession, SinkCase, SinkConformance, make_object, small_body

BAD_TOKEN = "not-the-cloudflare-token"


def make(fake: Any, bad_credentials: bool = False, *, warm: bool = False) -> CloudflareImagesSink:
    token = BAD_TOKEN if bad_credentials else fake.token
    account = CloudflareAccount(account_id=fake.account_id, token=token, api_base=fake.api_base, rps=200.0)
    sink = CloudflareImagesSink(account, timeout=30.0, batch_base=fake.batch_base)
    assert sink.batch is not None
    if warm and not bad_credentials:
        assert sink.batch.token() is not None
    return sink


def case_for(warm: bool) -> SinkCase:
    return SinkCase(
        name="cloudflare-images",
        fake=lambda: FakeCloudflare().images,
        make=lambda fake, bad_credentials=False: make(fake, bad_credentials, warm=warm),
        secrets=lambda fake: [fake.token, BAD_TOKEN],
    )


@pytest.fixture(params=[False, True], ids=["token-on-first-call", "token-held"])
def case(request: pytest.FixtureRequest) -> SinkCase:
    return case_for(request.param)


class TestImagesBatchConformance(SinkConformance):
    def test_the_case_uses_the_batch_host(self, sink: Any, fake: Any) -> None:
        """A guard for this file: the suite above sends its uploads to the batch host."""
        obj = make_object(sink.capabilities, 5_000)
        sink.upload(obj, small_body(obj)[0], RecordingSession())
        posts = [r for r in fake.requests if r.method == "POST"]
        assert len(posts) == 1 and fake.on_batch_host(posts[0])
