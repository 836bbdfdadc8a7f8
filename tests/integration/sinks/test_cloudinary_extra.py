"""Cloudinary-specific behaviour beyond the conformance suite: the official SDK against FakeCloudinary."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cloudinary
import cloudinary.utils
import pytest
import requests

from filesync.errors import ConfigError, NetworkError, PermanentError, RateLimited, ServerError
from filesync.model import Kind, SourceObject
from filesync.settings import Environment
from filesync.sinks import SinkContext
from filesync.sinks.cloudinary import MIN_CHUNK, CloudinarySink, cloudinary_account
from filesync.testing.fakes.cloudinary import FakeCloudinary
from filesync.testing.sink_conformance import GeneratedReader, RecordingSession

BAD_SECRET = "wrong-api-secret-abcdef"


@pytest.fixture
def fake() -> Iterator[FakeCloudinary]:
    with FakeCloudinary() as started:
        assert isinstance(started, FakeCloudinary)
        yield started


def sink_for(fake: FakeCloudinary, *, secret: str | None = None, chunk: int = MIN_CHUNK,
             folder: str = "") -> CloudinarySink:
    url = f"cloudinary://{fake.api_key}:{secret or fake.api_secret}@{fake.cloud}?upload_prefix={fake.url}"
    return CloudinarySink(cloudinary_account(url), folder=folder, chunk_bytes=chunk, timeout=10.0)


def media(kind: Kind, size: int = 3000, file_id: str = "f-1", **extra: object) -> tuple[SourceObject, bytes]:
    mime, ext = {Kind.IMAGE: ("image/jpeg", ".jpg"), Kind.VIDEO: ("video/mp4", ".mp4"),
                 Kind.OTHER: ("application/pdf", ".pdf")}[kind]
    data = GeneratedReader(size, seed=len(file_id)).read()
    obj = SourceObject(file_id=file_id, path=f"uploads/{file_id}{ext}", size=size, mime=mime, kind=kind,
                       **extra)  # type: ignore[arg-type]
    return obj, data


def uploads(fake: FakeCloudinary) -> list[str]:
    return [r.path for r in fake.requests_to("POST", "/upload")]


def test_signature_is_verified(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.IMAGE)
    with pytest.raises(PermanentError) as caught:
        sink_for(fake, secret=BAD_SECRET).upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.status == 401
    assert "Invalid Signature" in caught.value.reason
    assert BAD_SECRET not in str(caught.value)
    assert fake.stored() == []
    sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert [s.key for s in fake.stored()] == ["f-1"]


def test_signature_covers_every_parameter(fake: FakeCloudinary) -> None:
    """A correctly signed form with one parameter changed afterwards is refused."""
    params = cloudinary.utils.sign_request(
        {"timestamp": cloudinary.utils.now(), "public_id": "signed", "overwrite": False},
        {"api_key": fake.api_key, "api_secret": fake.api_secret},
    )
    url = f"{fake.url}/v1_1/{fake.cloud}/raw/upload"
    good = requests.post(url, data=params, files={"file": ("a.bin", b"abc")}, timeout=10)
    assert good.status_code == 200, good.text
    tampered = requests.post(url, data={**params, "public_id": "other"}, files={"file": ("a.bin", b"abc")},
                             timeout=10)
    assert tampered.status_code == 401
    assert tampered.json()["error"]["message"].startswith("Invalid Signature")


@pytest.mark.parametrize(("kind", "endpoint"), [(Kind.IMAGE, "image"), (Kind.VIDEO, "video"),
                                                (Kind.OTHER, "raw")])
def test_resource_type_follows_the_kind(fake: FakeCloudinary, kind: Kind, endpoint: str) -> None:
    obj, data = media(kind)
    remote = sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert uploads(fake) == [f"/v1_1/{fake.cloud}/{endpoint}/upload"]
    assert fake.read(remote.remote_id, endpoint) == data
    assert sink_for(fake).exists(obj) is not None
    assert fake.requests_to("GET")[-1].path == f"/v1_1/{fake.cloud}/resources/{endpoint}/upload/f-1"


def test_large_file_goes_in_chunks_with_bounded_memory(fake: FakeCloudinary, tmp_path: Path) -> None:
    size = 8 * MIN_CHUNK + 12345
    source = tmp_path / "big.mp4"
    with source.open("wb") as out:
        reader = GeneratedReader(size, seed=3)
        while block := reader.read(1 << 20):
            out.write(block)
    obj = SourceObject(file_id="big", path="v/big.mp4", size=size, mime="video/mp4", kind=Kind.VIDEO)
    session = RecordingSession()
    with source.open("rb") as body:
        tracemalloc.start()
        try:
            remote = sink_for(fake).upload(obj, body, session)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    parts = fake.requests_to("POST", "/video/upload")
    assert len(parts) == 9
    assert len({p.headers["x-unique-upload-id"] for p in parts}) == 1
    assert parts[0].headers["content-range"] == f"bytes 0-{MIN_CHUNK - 1}/{size}"
    assert parts[-1].headers["content-range"] == f"bytes {8 * MIN_CHUNK}-{size - 1}/{size}"
    assert (remote.size, remote.existed) == (size, False)
    assert fake.read("big", "video") == source.read_bytes()
    assert session.total == size
    assert peak < 4 * MIN_CHUNK, f"peak {peak / 2**20:.1f} MiB for chunks of {MIN_CHUNK / 2**20:.0f} MiB"


def test_chunked_repeat_sends_no_chunk(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.VIDEO, size=MIN_CHUNK + 100)
    first = sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    sent = len(uploads(fake))
    again = sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert sent == 2
    assert len(uploads(fake)) == sent
    assert (again.existed, again.remote_id) == (True, first.remote_id)


def test_context_carries_the_metadata(fake: FakeCloudinary) -> None:
    taken = datetime(2022, 1, 2, 3, 4, 5, tzinfo=UTC)
    obj, data = media(Kind.IMAGE, date_taken=taken, gps="-33.8688,151.2093")
    obj = SourceObject(**{**obj.__dict__, "path": "albums/a=b|c&d/x.jpg"})
    sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    (held,) = fake.stored()
    assert dict(held.metadata) == obj.metadata()
    assert held.metadata["dateTaken"] == "2022-01-02T03:04:05+00:00"


def test_upload_twice_stores_one_asset(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.IMAGE)
    first = sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    again = sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert fake.uploads == 1
    assert len(fake.stored()) == 1
    assert (again.existed, again.remote_id, again.url) == (True, first.remote_id, first.url)


def test_folder_and_escaped_ids_do_not_collide(fake: FakeCloudinary) -> None:
    sink = sink_for(fake, folder="family/photos")
    a, data_a = media(Kind.IMAGE, file_id="a?b")
    b, data_b = media(Kind.IMAGE, file_id="a~3fb")
    ra = sink.upload(a, io.BytesIO(data_a), RecordingSession())
    rb = sink.upload(b, io.BytesIO(data_b), RecordingSession())
    assert ra.remote_id != rb.remote_id
    assert all(r.remote_id.startswith("family/photos/") for r in (ra, rb))
    assert len(fake.stored()) == 2


@pytest.mark.parametrize("status", [420, 429])
def test_rate_limits_are_transient(fake: FakeCloudinary, status: int) -> None:
    obj, data = media(Kind.IMAGE)
    fake.fail_next(status)
    with pytest.raises(RateLimited) as caught:
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.status == status


def test_server_error_is_transient(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.IMAGE)
    fake.fail_next(500)
    with pytest.raises(ServerError) as caught:
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert caught.value.status == 500
    fake.fail_next(503, path_contains="/resources/")
    with pytest.raises(ServerError):
        sink_for(fake).exists(obj)


def test_cut_connection_is_a_network_error(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.IMAGE)
    fake.reset_next()
    with pytest.raises(NetworkError):
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())


def test_bad_secret_fails_check_without_the_secret(fake: FakeCloudinary) -> None:
    sink = sink_for(fake, secret=BAD_SECRET)
    with pytest.raises(PermanentError) as caught:
        sink.check()
    assert caught.value.status == 401
    assert "refused" in caught.value.reason
    for text in (str(caught.value), repr(caught.value), repr(sink), repr(sink.account)):
        assert BAD_SECRET not in text and fake.api_secret not in text
    sink_for(fake).check()
    assert fake.requests_to("GET", "/ping")[-1].status == 200


def test_two_accounts_coexist_despite_global_config() -> None:
    """Credentials go with every call: the SDK's global config (set here on purpose) is ignored."""
    saved = dict(cloudinary.config().__dict__)
    with FakeCloudinary(cloud="one", api_secret="secret-of-one-123") as one, \
            FakeCloudinary(cloud="two", api_key="222", api_secret="secret-of-two-456") as two:
        assert isinstance(one, FakeCloudinary) and isinstance(two, FakeCloudinary)
        cloudinary.config(cloud_name="elsewhere", api_key="999", api_secret="global-secret",
                          upload_prefix="http://127.0.0.1:9", upload_preset="global-preset")
        try:
            for fake in (one, two):
                obj, data = media(Kind.IMAGE, file_id=f"from-{fake.cloud}")
                sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
        finally:
            cloudinary.config().__dict__.clear()
            cloudinary.config().__dict__.update(saved)
        assert [s.key for s in one.stored()] == ["from-one"]
        assert [s.key for s in two.stored()] == ["from-two"]


def test_cloudinary_url_is_validated_without_echoing_it() -> None:
    def build(url: str) -> CloudinarySink:
        env = Environment({"CLOUDINARY_URL": url}, env_file="/nonexistent")
        return CloudinarySink.from_settings(env.load(CloudinarySink.Settings), SinkContext(http_timeout=5))

    sink = build("cloudinary://1234:top-secret-value@my-cloud?upload_prefix=http://127.0.0.1:8000/")
    assert (sink.account.cloud_name, sink.account.api_key) == ("my-cloud", "1234")
    assert sink.account.upload_prefix == "http://127.0.0.1:8000"
    assert sink.chunk_bytes == 20_000_000
    for bad in ("https://1234:top-secret-value@my-cloud", "cloudinary://1234@my-cloud",
                "cloudinary://1234:top-secret-value@my-cloud?overwrite=1"):
        with pytest.raises(ConfigError) as caught:
            build(bad)
        assert "CLOUDINARY_URL" in str(caught.value)
        assert "top-secret-value" not in str(caught.value)
    env = Environment({"CLOUDINARY_URL": "cloudinary://1:2@c", "CLOUDINARY_CHUNK_BYTES": "1000000"},
                      env_file="/nonexistent")
    with pytest.raises(ConfigError, match="CLOUDINARY_CHUNK_BYTES"):
        env.load(CloudinarySink.Settings)


def test_dotdot_id_refused_before_any_request(fake: FakeCloudinary) -> None:
    obj, data = media(Kind.IMAGE, file_id="../../escape")
    with pytest.raises(PermanentError):
        sink_for(fake).upload(obj, io.BytesIO(data), RecordingSession())
    assert fake.requests == []
