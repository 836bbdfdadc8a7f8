"""The Cloudflare Images batch API (issue 11) against FakeCloudflare over real sockets: uploads, lookups and
deletes go to the batch host under a batch token, the token is replaced before it expires and once after
a 401, a refused token call falls back to the account API (logged once), and the account's own limit is
never reached. Counts are requests per file, as upper bounds; nothing here asserts a duration.

The honesty tests of test_cloudflare_honesty.py that take the `images` fixture run here again on the batch
path (the fixtures below replace theirs); the ones that build their own sink have batch versions here.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import psycopg
import pytest
import requests
from structlog.testing import capture_logs

from filesync import pipeline
from filesync.app import App
from filesync.errors import DestinationRefused, ErrorClass, RateLimited, ServerError
from filesync.model import Kind, SourceObject
from filesync.settings import Environment
from filesync.sinks import SinkContext
from filesync.sinks._cloudflare import BATCH_TOKEN_RPS, DEFAULT_IMAGES_BATCH_BASE, CloudflareAccount, batch_base_for
from filesync.sinks.cloudflare_images import CloudflareImagesSink
from filesync.testing.fakes.base import LoggedRequest
from filesync.testing.fakes.cloudflare import AccountLimit, FakeCloudflare
from filesync.testing.sink_conformance import RecordingSession
from tests.conftest import S3Server, cloudflare_env
from tests.integration.sinks import test_cloudflare_honesty as honesty
from tests.media import image_bytes

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
TOKEN_CALL = "/images/v1/batch_token"


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    """As in the honesty tests: a 256 KiB minimum tus chunk."""
    with FakeCloudflare(min_chunk=256 * 1024) as server:
        yield server  # type: ignore[misc]


def batch_sink(fake: FakeCloudflare, *, token: str | None = None, timeout: float = 30.0,
               rps: float = 200.0) -> CloudflareImagesSink:
    account = CloudflareAccount(fake.account_id, token or fake.token, api_base=fake.api_base, rps=rps)
    return CloudflareImagesSink(account, timeout=timeout, batch_base=fake.batch_base)


@pytest.fixture
def images(fake: FakeCloudflare) -> Iterator[CloudflareImagesSink]:
    """A batch sink that already holds its token, as in the middle of a run: faults scripted by a test
    land on the batch host, not on the token call."""
    sink = batch_sink(fake)
    assert sink.batch is not None and sink.batch.token() is not None
    yield sink
    sink.close()


def photo(file_id: str, size: int = 4_000) -> tuple[SourceObject, bytes]:
    data = (JPEG + bytes(range(256)) * (size // 256 + 1))[:size]
    obj = SourceObject(file_id=file_id, path=f"photos/{file_id}.jpg", size=size, mime="image/jpeg",
                       kind=Kind.IMAGE)
    return obj, data


def on_batch(fake: FakeCloudflare, method: str | None = None) -> list[LoggedRequest]:
    return [r for r in fake.requests if fake.on_batch_host(r) and method in (None, r.method)]


def on_api(fake: FakeCloudflare) -> list[LoggedRequest]:
    return [r for r in fake.requests if not fake.on_batch_host(r)]


def token_calls(fake: FakeCloudflare) -> list[LoggedRequest]:
    return [r for r in fake.requests if r.path.endswith(TOKEN_CALL)]


def unavailable_events(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "images_batch_unavailable"]


# --- the honesty tests, again on the batch path ---------------------------------------------------------

test_an_image_stored_behind_an_unclear_answer_is_done = honesty.test_an_image_stored_behind_an_unclear_answer_is_done
test_an_unclear_answer_without_the_image_is_retried_not_parked = (
    honesty.test_an_unclear_answer_without_the_image_is_retried_not_parked)
test_an_answer_naming_another_image_is_never_success = honesty.test_an_answer_naming_another_image_is_never_success
test_an_image_of_another_file_at_our_id_is_not_ours = honesty.test_an_image_of_another_file_at_our_id_is_not_ours
test_replace_puts_the_new_bytes_under_the_same_id = honesty.test_replace_puts_the_new_bytes_under_the_same_id
test_replace_of_an_image_that_is_not_there_uploads_it = honesty.test_replace_of_an_image_that_is_not_there_uploads_it
test_no_error_text_carries_the_token = honesty.test_no_error_text_carries_the_token


def test_the_honesty_tests_above_ran_on_the_batch_host(fake: FakeCloudflare, images: CloudflareImagesSink) -> None:
    """A guard for the re-run: the `images` fixture those tests get here sends to the batch host."""
    obj, data = photo("guard")
    images.upload(obj, io.BytesIO(data), RecordingSession())
    assert [r.path for r in on_batch(fake, "POST")] == ["/images/v1"]


def test_an_image_stored_behind_a_timeout_is_done(fake: FakeCloudflare) -> None:
    """The answer comes after the client gave up: the lookup, on the batch host too, finds the image."""
    sink = batch_sink(fake, timeout=2.0)
    obj, data = photo("slow-answer")
    fake.hold_response_next(5.0, method="POST", path_contains="/images/v1")
    remote = sink.upload(obj, io.BytesIO(data), RecordingSession())
    sink.close()
    assert remote.remote_id == obj.file_id and len(fake.images.stored()) == 1
    assert [r.method for r in on_batch(fake)] == ["POST", "GET"]


def test_images_over_the_accounts_quota_stop_the_destination() -> None:
    with FakeCloudflare(image_limit=1) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        sink = batch_sink(fake)
        first, data = photo("quota-1")
        sink.upload(first, io.BytesIO(data), RecordingSession())
        second, data = photo("quota-2")
        with pytest.raises(DestinationRefused) as caught:
            sink.upload(second, io.BytesIO(data), RecordingSession())
        sink.close()
        assert caught.value.error_class is ErrorClass.QUOTA
        assert [r.status for r in on_batch(fake, "POST")] == [200, 403]


# --- where the calls go ----------------------------------------------------------------------------------


def test_uploads_lookups_and_deletes_go_to_the_batch_host(fake: FakeCloudflare) -> None:
    sink = batch_sink(fake)
    objs = [photo(f"b-{n}") for n in range(5)]
    for obj, data in objs:
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    obj, data = objs[0]
    assert sink.exists(obj) is not None
    sink.upload(obj, io.BytesIO(data), RecordingSession(replace=True))  # lookup, delete, upload
    sink.check()  # /images/v1/stats is not a batch call
    sink.close()
    assert [r.path for r in on_api(fake)] == [fake.base_path + TOKEN_CALL, fake.base_path + "/images/v1/stats"]
    assert len(on_batch(fake, "POST")) <= len(objs) + 1  # one POST per upload
    assert len(on_batch(fake, "GET")) <= 2 and len(on_batch(fake, "DELETE")) == 1
    assert {r.status for r in on_batch(fake)} == {200}
    # each token goes only to the host it is for
    api_auth = f"Bearer {fake.token}"
    assert all(r.headers["authorization"] == api_auth for r in on_api(fake))
    assert all(r.headers["authorization"] != api_auth for r in on_batch(fake))
    assert sorted(o.key for o in fake.images.stored()) == sorted(o.file_id for o, _ in objs)


def test_one_token_serves_every_call_until_it_is_due(fake: FakeCloudflare) -> None:
    sink = batch_sink(fake)
    for n in range(10):
        obj, data = photo(f"many-{n}")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    sink.close()
    assert len(token_calls(fake)) == 1 and fake.batch_tokens_issued == 1
    assert len({r.headers["authorization"] for r in on_batch(fake)}) == 1


def test_a_401_from_the_batch_host_gets_a_new_token_and_sends_again_once(fake: FakeCloudflare) -> None:
    sink = batch_sink(fake)
    first, data = photo("before")
    sink.upload(first, io.BytesIO(data), RecordingSession())
    fake.expire_batch_tokens()  # revoked or expired early, whatever its expiresAt said
    second, data = photo("after")
    remote = sink.upload(second, io.BytesIO(data), RecordingSession())
    sink.close()
    assert remote.remote_id == "after" and len(fake.images.stored()) == 2
    posts = on_batch(fake, "POST")
    assert [r.status for r in posts] == [200, 401, 200]
    assert posts[1].headers["authorization"] == posts[0].headers["authorization"] != posts[2].headers["authorization"]
    assert len(token_calls(fake)) == 2


def test_a_fresh_token_refused_too_ends_the_batch_path(fake: FakeCloudflare) -> None:
    sink = batch_sink(fake)
    obj, data = photo("one")
    sink.upload(obj, io.BytesIO(data), RecordingSession())
    fake.fail_next(401, method="POST", path_contains="/images/v1", times=2)
    with capture_logs() as logs:
        obj, data = photo("two")
        assert sink.upload(obj, io.BytesIO(data), RecordingSession()).remote_id == "two"
        obj, data = photo("three")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    sink.close()
    assert [r.status for r in on_batch(fake, "POST")] == [200, 401, 401]  # sent once more, not twice
    assert [r.path for r in on_api(fake) if r.method == "POST"] == [fake.base_path + "/images/v1"] * 2
    assert len(token_calls(fake)) == 2
    assert len(unavailable_events(logs)) == 1


def test_a_token_is_replaced_before_it_expires() -> None:
    """A token that lives 4 s is replaced after 3 s (a quarter of its life ahead): the upload after that
    point carries a new token, and the batch host never had to refuse one."""
    with FakeCloudflare(batch_token_ttl=4.0) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        sink = batch_sink(fake)
        obj, data = photo("early")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
        (expires,) = fake.batch_tokens.values()
        time.sleep(max(0.0, expires - 0.7 - time.time()))  # past the replacement point, before expiry
        obj, data = photo("late")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
        sink.close()
        posts = on_batch(fake, "POST")
        assert [r.status for r in posts] == [200, 200]
        assert posts[0].headers["authorization"] != posts[1].headers["authorization"]
        assert len(token_calls(fake)) == 2 and fake.batch_tokens_issued == 2


def test_a_token_already_past_its_expiry_is_not_sent() -> None:
    """A sink idle past its token's expiry fetches a new one before the next call (no 401 on the way)."""
    with FakeCloudflare(batch_token_ttl=1.5) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        sink = batch_sink(fake)
        obj, data = photo("first")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
        (expires,) = fake.batch_tokens.values()
        time.sleep(max(0.0, expires + 0.2 - time.time()))
        obj, data = photo("second")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
        sink.close()
        assert [r.status for r in on_batch(fake, "POST")] == [200, 200]
        assert fake.batch_tokens_issued == 2


# --- when the account refuses the token call -----------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(403, 5403), (404, 7003), (400, 5400), (200, 5400)],
                         ids=["403", "404", "400", "200-success-false"])
def test_a_refused_token_call_falls_back_to_the_account_api(fake: FakeCloudflare, status: int, code: int) -> None:
    """A plan without the batch API: one token call, one log line, then the account API for good."""
    fake.refuse_batch_tokens(status, code)
    sink = batch_sink(fake)
    with capture_logs() as logs:
        for n in range(3):
            obj, data = photo(f"fallback-{n}")
            assert sink.upload(obj, io.BytesIO(data), RecordingSession()).remote_id == obj.file_id
        assert sink.exists(obj) is not None
    sink.close()
    assert on_batch(fake) == []
    assert len(token_calls(fake)) == 1
    assert len([r for r in on_api(fake) if r.method == "POST"]) == 3
    (event,) = unavailable_events(logs)
    assert f"HTTP {status}" in event["reason"] or str(code) in event["reason"]
    assert fake.token not in str(event)


def test_check_reports_a_plan_without_the_batch_api(fake: FakeCloudflare) -> None:
    fake.refuse_batch_tokens()
    sink = batch_sink(fake)
    with capture_logs() as logs:
        sink.check()  # the account API works: not an error, but said once
        sink.check()
    sink.close()
    assert len(unavailable_events(logs)) == 1 and len(token_calls(fake)) == 1


def test_a_refused_api_token_stops_the_destination_at_the_token_call(fake: FakeCloudflare) -> None:
    secret = "cf-revoked-token-5678"
    sink = batch_sink(fake, token=secret)
    obj, data = photo("auth")
    with capture_logs() as logs, pytest.raises(DestinationRefused) as caught:
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    sink.close()
    assert (caught.value.status, caught.value.error_class) == (401, ErrorClass.AUTH)
    assert secret not in str(caught.value) + repr(caught.value)
    assert unavailable_events(logs) == [] and on_batch(fake) == []


@pytest.mark.parametrize("status", [429, 503])
def test_a_transient_failure_of_the_token_call_is_that_calls_error(fake: FakeCloudflare, status: int) -> None:
    """Not a fallback, and not an upload whose outcome is unclear: the next try fetches again."""
    fake.fail_next(status, headers={"Retry-After": "1"}, path_contains=TOKEN_CALL)
    sink = batch_sink(fake)
    obj, data = photo(f"token-{status}")
    with pytest.raises((RateLimited, ServerError)) as caught:
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.status == status
    assert sink.upload(obj, io.BytesIO(data), RecordingSession()).remote_id == obj.file_id
    sink.close()
    assert [r.method for r in fake.requests] == ["GET", "GET", "POST"]  # no lookup after the failed token call
    assert len(on_batch(fake, "POST")) == 1


# --- pacing: per host and per token ---------------------------------------------------------------------


def test_a_429_from_the_batch_host_pauses_that_token_only(fake: FakeCloudflare) -> None:
    sink = batch_sink(fake)
    assert sink.batch is not None
    token = sink.batch.token()
    assert token is not None
    account_pacer = sink.http.get_adapter(fake.api_base)._pacer  # type: ignore[attr-defined]
    account_pauses = account_pacer.pauses  # the account pacer is the process's, shared with other tests
    fake.fail_next(429, headers={"Retry-After": "2"}, method="POST", path_contains="/images/v1")
    obj, data = photo("limited")
    with pytest.raises(RateLimited) as caught:
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.retry_after == 2
    assert token.pacer.pauses == 1 and account_pacer.pauses == account_pauses
    assert token.pacer.rate == BATCH_TOKEN_RPS < 200
    sink.close()


def test_the_fakes_per_token_limit_answers_429_past_it() -> None:
    """The fake's own limit, so the benchmarks can trust it: an unpaced token past 5 per second."""
    with FakeCloudflare(batch_rps=5) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        sink = batch_sink(fake)
        assert sink.batch is not None
        sink.batch.rps = 1000.0  # its tokens unpaced, to provoke the limit
        statuses = []
        for n in range(8):
            obj, data = photo(f"burst-{n}")
            try:
                sink.upload(obj, io.BytesIO(data), RecordingSession())
                statuses.append(200)
            except RateLimited:
                statuses.append(429)
        sink.close()
        assert 429 in statuses and fake.batch_limited >= 1


# --- the account limit ----------------------------------------------------------------------------------


def test_the_fakes_account_limit_blocks_the_account_api_past_its_budget() -> None:
    """The simulated limit can be reached: 5 account calls allowed per 30 s, then every account call is
    blocked, while the batch host goes on serving the token it issued."""
    with FakeCloudflare(account_limit=AccountLimit(5, 30.0, 30.0)) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        account = CloudflareAccount(fake.account_id, fake.token, api_base=fake.api_base, rps=1000.0)
        batch = batch_sink(fake)
        assert batch.batch is not None and batch.batch.token() is not None  # the 1st account call
        sink = CloudflareImagesSink(account, timeout=30.0, batch=False)
        outcomes = []
        for n in range(5):
            obj, data = photo(f"account-{n}")
            try:
                sink.upload(obj, io.BytesIO(data), RecordingSession())
                outcomes.append("ok")
            except RateLimited:
                outcomes.append("429")
        sink.close()
        assert outcomes == ["ok"] * 4 + ["429"]
        blocked = requests.get(f"{fake.api_base}/accounts/{fake.account_id}/images/v1/stats", timeout=10,
                               headers={"Authorization": f"Bearer {fake.token}"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 20
        assert fake.account_limited == 2
        obj, data = photo("through-the-batch-host")
        batch.upload(obj, io.BytesIO(data), RecordingSession())
        batch.close()


def test_the_account_limit_is_never_reached_through_the_pipeline(database_url: str, s3: S3Server) -> None:
    """A run of 40 images at concurrency 8 with an account limit of 4 requests in any 4 s: through the
    batch host, the account API sees the token call and nothing else, and never answers 429."""
    count = 40
    with FakeCloudflare(account_limit=AccountLimit(4, 4.0, 4.0)) as server:
        cf: FakeCloudflare = server  # type: ignore[assignment]
        with psycopg.connect(database_url, autocommit=True) as conn:
            for n in range(count):
                s3.put(f"photos/{n}.jpg", image_bytes(color=f"#{n:02x}{n:02x}80"), "image/jpeg")
                conn.execute('INSERT INTO "File" (id, path) VALUES (%s, %s)', (f"img-{n}", f"photos/{n}.jpg"))
        env = cloudflare_env(database_url, s3, cf, cf.token, CLOUDFLARE_IMAGES_BATCH_BASE=cf.batch_base,
                             FILESYNC_CLOUDFLARE_RPS="0.5", FILESYNC_CONCURRENCY="8",
                             FILESYNC_ROUTES="image/*=cloudflare-images")
        with App.build(Environment(env, env_file=os.devnull)) as app:
            summary = pipeline.run(app)
        assert summary.copied == count
        assert cf.account_limited == 0
        assert [r.path for r in on_api(cf)] == [cf.base_path + TOKEN_CALL]
        assert len(on_batch(cf, "POST")) <= count and len(on_batch(cf)) <= count
        assert len(cf.images.stored()) == count
        with psycopg.connect(database_url) as conn:
            assert conn.execute('SELECT count(*) FROM "File" WHERE "copiedToCloudflare"').fetchone() == (count,)


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_turn_the_batch_path_on_and_off(fake: FakeCloudflare) -> None:
    base = {"CLOUDFLARE_ACCOUNT_ID": fake.account_id, "CLOUDFLARE_API_TOKEN": fake.token,
            "CLOUDFLARE_API_BASE": fake.api_base, "CLOUDFLARE_IMAGES_BATCH_BASE": fake.batch_base + "/"}
    on = Environment(base, env_file=os.devnull).load(CloudflareImagesSink.Settings)
    off = Environment({**base, "FILESYNC_CLOUDFLARE_IMAGES_BATCH": "false"}, env_file=os.devnull).load(
        CloudflareImagesSink.Settings)
    defaults = Environment({k: v for k, v in base.items() if k != "CLOUDFLARE_IMAGES_BATCH_BASE"},
                           env_file=os.devnull).load(CloudflareImagesSink.Settings)
    assert (on.batch, off.batch, defaults.batch_base) == (True, False, DEFAULT_IMAGES_BATCH_BASE)
    for values, expected in ((on, 1), (off, 0)):
        sink = CloudflareImagesSink.from_settings(values, SinkContext(http_timeout=5.0))
        obj, data = photo(f"setting-{expected}")
        sink.upload(obj, io.BytesIO(data), RecordingSession())
        sink.close()
    assert len(on_batch(fake, "POST")) == 1 and len([r for r in on_api(fake) if r.method == "POST"]) == 1
    # the default batch host is Cloudflare's, for Cloudflare's API only: a fake API's tokens never go there
    assert CloudflareImagesSink.from_settings(defaults, SinkContext()).batch is None
    cloudflare = "https://api.cloudflare.com/client/v4"
    assert batch_base_for(cloudflare, DEFAULT_IMAGES_BATCH_BASE) == DEFAULT_IMAGES_BATCH_BASE
    assert batch_base_for(fake.api_base, None) is None
