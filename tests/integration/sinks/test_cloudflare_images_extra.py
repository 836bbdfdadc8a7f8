"""Cloudflare Images specifics against FakeCloudflare over real sockets: custom-id idempotency (5409),
metadata within 1,024 bytes, error envelopes, the shared pacer and refused credentials."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from filesync import http
from filesync.errors import PermanentError, RateLimited, ServerError
from filesync.model import Kind, SourceObject
from filesync.settings import Environment
from filesync.sinks import SinkContext
from filesync.sinks._cloudflare import SETTINGS, CloudflareAccount
from filesync.sinks.cloudflare_images import CloudflareImagesSink, fit_metadata
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import RecordingSession

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as server:
        yield server  # type: ignore[misc]


def make_sink(fake: FakeCloudflare, token: str | None = None) -> CloudflareImagesSink:
    account = CloudflareAccount(fake.account_id, token or fake.token, api_base=fake.api_base, rps=200.0)
    return CloudflareImagesSink(account, timeout=30.0)


@pytest.fixture
def sink(fake: FakeCloudflare) -> Iterator[CloudflareImagesSink]:
    built = make_sink(fake)
    yield built
    built.close()


def photo(file_id: str = "file-1", size: int = 4_000, **extra: object) -> tuple[SourceObject, bytes]:
    body = (JPEG + bytes(range(256)) * (size // 256 + 1))[:size]
    obj = SourceObject(file_id=file_id, path=f"photos/{file_id}.jpg", size=size, mime="image/jpeg",
                       kind=Kind.IMAGE, **extra)  # type: ignore[arg-type]
    return obj, body


def test_upload_twice_is_one_image_through_5409(fake: FakeCloudflare, sink: CloudflareImagesSink) -> None:
    obj, body = photo("dup-1")
    first = sink.upload(obj, io.BytesIO(body), RecordingSession())
    again = sink.upload(obj, io.BytesIO(body), RecordingSession())
    assert first.remote_id == again.remote_id == "dup-1"
    assert not first.existed and again.existed
    assert again.url == first.url and first.url and first.url.endswith("/public")
    assert [r.status for r in fake.requests_to("POST", "/images/v1")] == [200, 409]
    assert len(fake.images.stored()) == 1
    assert requests.get(first.url, timeout=10).content == body  # the variant URL serves the bytes


def test_metadata_arrives_as_json_with_the_four_keys(fake: FakeCloudflare,
                                                     sink: CloudflareImagesSink) -> None:
    taken = datetime(2022, 5, 1, 12, 0, tzinfo=UTC)
    obj, body = photo("meta-1", date_taken=taken, gps="40.7,-74.0")
    sink.upload(obj, io.BytesIO(body), RecordingSession())
    image = fake.image("meta-1")
    assert image is not None
    assert image.meta == {"fileId": "meta-1", "path": "photos/meta-1.jpg", "dateTaken": taken.isoformat(),
                          "gpsCoordinates": "40.7,-74.0"}
    assert image.content_type == "image/jpeg"


def test_metadata_over_1024_bytes_drops_keys_instead_of_failing(fake: FakeCloudflare,
                                                                sink: CloudflareImagesSink) -> None:
    taken = datetime(2021, 1, 2, tzinfo=UTC)
    obj, body = photo("long-path", date_taken=taken, gps="1,2")
    obj = SourceObject(**{**obj.__dict__, "path": "deep/" * 300 + "x.jpg"})
    remote = sink.upload(obj, io.BytesIO(body), RecordingSession())
    image = fake.image(remote.remote_id)
    assert image is not None
    assert "path" not in image.meta
    assert image.meta["dateTaken"] == taken.isoformat() and image.meta["gpsCoordinates"] == "1,2"
    assert len(fit_metadata({"path": "é" * 2000, "fileId": "x" * 2000})) <= 1024


def test_429_carries_retry_after(fake: FakeCloudflare, sink: CloudflareImagesSink) -> None:
    obj, body = photo("limited")
    fake.fail_next(429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited) as caught:
        sink.upload(obj, io.BytesIO(body), RecordingSession())
    assert caught.value.retry_after == 1
    assert "throttling" in caught.value.reason
    assert fake.images.stored() == []


@pytest.mark.parametrize("status", [524, 500])
def test_server_failures_are_transient(fake: FakeCloudflare, sink: CloudflareImagesSink, status: int) -> None:
    obj, body = photo(f"srv-{status}")
    fake.fail_next(status)
    with pytest.raises(ServerError) as caught:
        sink.upload(obj, io.BytesIO(body), RecordingSession())
    assert caught.value.status == status
    assert sink.upload(obj, io.BytesIO(body), RecordingSession()).remote_id == f"srv-{status}"


def test_400_is_permanent_with_the_services_message(fake: FakeCloudflare, sink: CloudflareImagesSink) -> None:
    obj, body = photo("bad-1")
    message = "Bad request: image could not be decoded"
    fake.fail_next(400, body=json.dumps({"success": False, "errors": [{"code": 5400, "message": message}],
                                         "messages": [], "result": None}).encode())
    with pytest.raises(PermanentError) as caught:
        sink.upload(obj, io.BytesIO(body), RecordingSession())
    assert caught.value.status == 400
    assert caught.value.reason == f"{message} (code 5400)"


def test_413_from_the_service_is_permanent() -> None:
    with FakeCloudflare(max_image_bytes=2_000) as fake:
        sink = make_sink(fake)  # type: ignore[arg-type]
        obj, body = photo("big-1", size=5_000)
        with pytest.raises(PermanentError) as caught:
            sink.upload(obj, io.BytesIO(body), RecordingSession())
        assert caught.value.status == 413
        assert "maximum size" in caught.value.reason
        assert fake.images.stored() == []  # type: ignore[attr-defined]


def test_fake_refuses_a_file_part_without_an_image_type(fake: FakeCloudflare) -> None:
    response = requests.post(
        f"{fake.api_base}/accounts/{fake.account_id}/images/v1",
        headers={"Authorization": f"Bearer {fake.token}"},
        files={"file": ("a.jpg", JPEG, "application/octet-stream")}, timeout=10,
    )
    assert response.status_code == 400
    assert "content-type" in response.json()["errors"][0]["message"]


def test_one_pacer_for_every_cloudflare_sink(fake: FakeCloudflare) -> None:
    from filesync.sinks.cloudflare_stream import CloudflareStreamSink

    a, b = make_sink(fake), make_sink(fake)
    account = CloudflareAccount(fake.account_id, fake.token, api_base=fake.api_base, rps=200.0)
    stream = CloudflareStreamSink(account, timeout=30.0)
    pacers = {id(s.http.get_adapter(fake.api_base)._pacer) for s in (a, b, stream)}  # type: ignore[attr-defined]
    assert pacers == {id(http.pacer("cloudflare", 200.0))}
    # a 429 seen by one sink holds the other back
    pacer = http.pacer("cloudflare", 200.0)
    fake.fail_next(429, headers={"Retry-After": "3"})
    with pytest.raises(RateLimited):
        a.check()
    waited = pacer.waited
    b.check()
    assert pacer.waited - waited > 1.0


def test_bad_token_check_fails_without_showing_it(fake: FakeCloudflare,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    secret = "cf-wrong-token-Zq81"
    bad = make_sink(fake, token=secret)
    with pytest.raises(PermanentError) as caught:
        bad.check()
    assert "refused the credentials" in caught.value.reason
    assert caught.value.status == 401
    shown = str(caught.value) + repr(caught.value) + repr(bad) + repr(bad.account)
    out = capsys.readouterr()
    assert secret not in shown + out.out + out.err
    assert fake.token not in shown


def test_from_settings_uses_the_shared_cloudflare_settings(fake: FakeCloudflare) -> None:
    env = Environment({"CLOUDFLARE_ACCOUNT_ID": fake.account_id, "CLOUDFLARE_API_TOKEN": fake.token,
                       "CLOUDFLARE_API_BASE": fake.api_base + "/", "FILESYNC_CLOUDFLARE_RPS": "200"},
                      env_file="/nonexistent")
    values = env.load(CloudflareImagesSink.Settings)
    assert values.rps == 200.0
    assert {s.env: s.default for s in SETTINGS}["FILESYNC_CLOUDFLARE_RPS"] == "3.5"
    assert [s.env for s in SETTINGS if s.secret] == ["CLOUDFLARE_API_TOKEN"]
    sink = CloudflareImagesSink.from_settings(values, SinkContext(http_timeout=5.0))
    sink.check()
    assert fake.token not in repr(sink.account)
