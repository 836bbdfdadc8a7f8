"""Bunny-specific behaviour beyond the conformance suite, against FakeBunny over a real socket."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import pytest

from filesync.errors import ConfigError, NetworkError, PermanentError, RateLimited, SourceError
from filesync.model import Kind, SourceObject
from filesync.settings import Environment
from filesync.sinks import SinkContext
from filesync.sinks.bunny import BunnySink
from filesync.testing.fakes.base import free_port
from filesync.testing.fakes.bunny import FakeBunny
from filesync.testing.sink_conformance import RecordingSession

# From Bunny's docs (storage/http.mdx) and the official TS SDK's regions.ts.
DOCUMENTED_HOSTS = {
    "de": "storage.bunnycdn.com",
    "uk": "uk.storage.bunnycdn.com",
    "ny": "ny.storage.bunnycdn.com",
    "la": "la.storage.bunnycdn.com",
    "sg": "sg.storage.bunnycdn.com",
    "se": "se.storage.bunnycdn.com",
    "br": "br.storage.bunnycdn.com",
    "jh": "jh.storage.bunnycdn.com",
    "syd": "syd.storage.bunnycdn.com",
}
BAD_KEY = "wrong-zone-password-1234"


@pytest.fixture
def fake() -> Iterator[FakeBunny]:
    with FakeBunny() as started:
        assert isinstance(started, FakeBunny)
        yield started


def sink_for(fake: FakeBunny, **kw: object) -> BunnySink:
    options: dict[str, object] = {"endpoint": fake.url, "timeout": 10.0, **kw}
    key = str(options.pop("key", fake.access_key))
    return BunnySink(fake.zone, key, **options)  # type: ignore[arg-type]


def photo(file_id: str = "f-1", size: int = 4096, path: str = "2024/IMG 1.jpg") -> tuple[SourceObject, bytes]:
    data = (hashlib.sha256(file_id.encode()).digest() * (size // 32 + 1))[:size]
    return SourceObject(file_id=file_id, path=path, size=size, mime="image/jpeg", kind=Kind.IMAGE), data


def env_sink(**values: str) -> BunnySink:
    env = Environment({"BUNNY_STORAGE_ZONE": "zone", "BUNNY_API_KEY": "secret-zone-password", **values},
                      env_file="/nonexistent")
    return BunnySink.from_settings(env.load(BunnySink.Settings), SinkContext(http_timeout=5))


@pytest.mark.parametrize("region", sorted(DOCUMENTED_HOSTS))
def test_every_region_maps_to_its_host(region: str) -> None:
    sink = env_sink(BUNNY_REGION=region.upper())
    assert sink.endpoint == f"https://{DOCUMENTED_HOSTS[region]}"
    assert sink._url("a b/c.jpg") == f"https://{DOCUMENTED_HOSTS[region]}/zone/a%20b/c.jpg"


def test_unknown_region_names_the_variable_not_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        env_sink(BUNNY_REGION="mars")
    assert "BUNNY_REGION" in str(caught.value)
    assert "secret-zone-password" not in str(caught.value)


def test_endpoint_overrides_region() -> None:
    assert env_sink(BUNNY_REGION="syd", BUNNY_ENDPOINT="http://proxy.local:8080/").endpoint == \
        "http://proxy.local:8080"


def test_checksum_header_is_uppercase_sha256(fake: FakeBunny) -> None:
    obj, data = photo()
    session = RecordingSession()
    remote = sink_for(fake).upload(obj, io.BytesIO(data), session)
    (put,) = fake.requests_to("PUT")
    assert put.headers["checksum"] == hashlib.sha256(data).hexdigest().upper()
    assert put.headers["content-length"] == str(len(data))
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["override-content-type"] == "image/jpeg"
    assert remote.checksum == hashlib.sha256(data).hexdigest()
    assert fake.read(remote.remote_id) == data
    assert session.total == len(data)


def test_corrupt_body_is_refused_as_permanent_mentioning_checksum(fake: FakeBunny) -> None:
    obj, data = photo()
    fake.corrupt_next()
    with pytest.raises(PermanentError) as caught:
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.status == 400
    assert "checksum" in caught.value.reason.lower()
    assert fake.stored() == []


def test_upload_twice_sends_one_put(fake: FakeBunny) -> None:
    sink = sink_for(fake)
    obj, data = photo()
    first = sink.upload(obj, io.BytesIO(data), RecordingSession())
    again = sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert len(fake.requests_to("PUT")) == 1
    assert len(fake.requests_to("DESCRIBE")) == 2
    assert (again.existed, again.remote_id, again.checksum) == (True, first.remote_id, first.checksum)


def test_different_bytes_under_the_same_name_are_replaced(fake: FakeBunny) -> None:
    """A leftover with another checksum (an older or damaged copy) is not mistaken for ours."""
    sink = sink_for(fake)
    obj, data = photo()
    sink.upload(obj, io.BytesIO(data[::-1]), RecordingSession())
    remote = sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert not remote.existed
    assert len(fake.requests_to("PUT")) == 2
    assert fake.read(remote.remote_id) == data


@pytest.mark.parametrize("pull_zone", ["myzone.b-cdn.net", "https://myzone.b-cdn.net/"])
def test_public_url_from_the_pull_zone(fake: FakeBunny, pull_zone: str) -> None:
    sink = sink_for(fake, pull_zone=pull_zone, root="media/originals", template="{kind}/{id}{ext}")
    obj, data = photo(file_id="id 7")
    remote = sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert remote.remote_id == "media/originals/image/id 7.jpg"
    assert remote.url == "https://myzone.b-cdn.net/media/originals/image/id%207.jpg"
    assert [s.key for s in fake.stored()] == [remote.remote_id]


def test_no_pull_zone_no_url(fake: FakeBunny) -> None:
    obj, data = photo()
    assert sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession()).url is None


def test_bad_key_fails_check_without_the_key(fake: FakeBunny) -> None:
    sink = sink_for(fake, key=BAD_KEY)
    with pytest.raises(PermanentError) as caught:
        sink.check()
    assert "access key refused" in caught.value.reason
    for text in (str(caught.value), repr(caught.value), repr(sink)):
        assert BAD_KEY not in text and fake.access_key not in text
    assert fake.requests_to("GET")[0].path == f"/{fake.zone}/"


def test_check_reports_unknown_zone_and_unreachable(fake: FakeBunny) -> None:
    fake.fail_next(404)
    with pytest.raises(PermanentError) as caught:
        sink_for(fake).check()
    assert "unknown storage zone" in caught.value.reason
    closed = BunnySink(fake.zone, fake.access_key, endpoint=f"http://127.0.0.1:{free_port()}", timeout=5.0)
    with pytest.raises(NetworkError) as unreachable:
        closed.check()
    assert "unreachable" in unreachable.value.reason
    assert fake.access_key not in str(unreachable.value)


def test_dotdot_refused_before_any_request(fake: FakeBunny) -> None:
    sink = sink_for(fake, template="{path}")
    obj, data = photo(path="../../etc/passwd")
    with pytest.raises(PermanentError) as caught:
        sink.upload(obj, io.BytesIO(data), RecordingSession())
    assert "escape" in caught.value.reason
    assert fake.requests == []


def test_busy_answer_is_transient(fake: FakeBunny) -> None:
    """Bunny answers a per-operation concurrency limit with `400 Unable to process request`."""
    busy = {"HttpCode": 400, "Message": "Unable to process request"}
    fake.fail_next(400, method="PUT", body=json.dumps(busy).encode())
    obj, data = photo()
    with pytest.raises(RateLimited):
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert fake.stored() == []


def test_short_body_sends_nothing(fake: FakeBunny) -> None:
    obj, data = photo()
    with pytest.raises(SourceError, match="expected"):
        sink_for(fake).upload(obj, io.BytesIO(data[:-10]), RecordingSession())
    assert fake.requests_to("PUT") == []
