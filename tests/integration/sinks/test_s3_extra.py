"""S3 specifics beyond the shared suite, against moto through the same fault-injecting proxy."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from filesync.errors import (
    ConfigError,
    NetworkError,
    PermanentError,
    RateLimited,
    ServerError,
    SinkError,
    SinkTimeout,
)
from filesync.model import Kind, SourceObject
from filesync.sinks.s3 import ENCODED, MIB, S3Sink, decode_meta, encode_meta, part_size_for
from filesync.testing.sink_conformance import RecordingSession, body_for, make_object, small_body

from .cases.case_s3 import PART_SIZE, FakeS3, make

CAPS = S3Sink.capabilities


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    store = FakeS3().start()
    try:
        yield store
    finally:
        store.stop()


def big_object(size: int = 2 * PART_SIZE + 123_457, **extra: Any) -> SourceObject:
    """Three parts: two whole ones and a short last one."""
    return make_object(CAPS, size, kind=Kind.VIDEO, **extra)


def test_multipart_above_the_part_size_leaves_one_whole_object(fake: FakeS3) -> None:
    sink = make(fake)
    obj = big_object()
    reader = body_for(obj)
    session = RecordingSession()
    remote = sink.upload(obj, io.BufferedReader(reader), session)
    held = fake.stored()
    assert [(o.key, o.size, o.sha256) for o in held] == [(remote.remote_id, obj.size, reader.sha256())]
    assert remote.checksum == reader.sha256()
    assert fake.head(remote.remote_id)["ETag"].strip('"').endswith("-3"), "expected a three-part upload"
    assert session.progressed == [PART_SIZE, PART_SIZE, obj.size - 2 * PART_SIZE]
    assert fake.pending_uploads() == []


def test_a_body_failing_mid_multipart_aborts_the_upload(fake: FakeS3) -> None:
    sink = make(fake)
    obj = big_object()
    with pytest.raises(OSError):
        sink.upload(obj, io.BufferedReader(body_for(obj, fail_after=PART_SIZE + 10)), RecordingSession())
    assert fake.requests_to("PUT"), "a part was sent before the failure"
    assert fake.stored() == []
    assert fake.pending_uploads() == [], "the multipart upload was left open"


def test_a_failing_part_aborts_the_upload_and_raises_transient(fake: FakeS3) -> None:
    sink = make(fake)
    obj = big_object()
    fake.fail_next(503, method="PUT")
    with pytest.raises(ServerError) as caught:
        sink.upload(obj, io.BufferedReader(body_for(obj)), RecordingSession())
    assert caught.value.status == 503
    assert fake.stored() == []
    assert fake.pending_uploads() == []
    assert fake.requests_to("DELETE"), "AbortMultipartUpload was not sent"


def test_a_source_shorter_than_its_size_is_refused_and_aborted(fake: FakeS3) -> None:
    sink = make(fake)
    obj = big_object()
    short = io.BytesIO(body_for(obj).read(PART_SIZE + 100))
    with pytest.raises(PermanentError, match="short"):
        sink.upload(obj, short, RecordingSession())
    assert fake.stored() == []
    assert fake.pending_uploads() == []


def test_non_ascii_metadata_round_trips_as_ascii(fake: FakeS3) -> None:
    sink = make(fake)
    taken = datetime(2022, 12, 31, 23, 59, tzinfo=UTC)
    obj = make_object(CAPS, 1_000, file_id="ümlaut-1", path="Fotos/Zürich  été 日本 ?#%&+.jpg",
                      date_taken=taken, gps=" 47.37,8.54 ")
    remote = sink.upload(obj, small_body(obj)[0], RecordingSession())
    raw = fake.head(remote.remote_id)["Metadata"]
    assert all(v.isascii() for v in raw.values())
    assert raw["path"].startswith(ENCODED)
    assert raw["datetaken"] == taken.isoformat(), "plain ASCII values are stored as they are"
    assert sink.read_metadata(obj) | {"sha256": ""} == {
        "fileid": "ümlaut-1", "path": obj.path, "datetaken": taken.isoformat(),
        "gpscoordinates": " 47.37,8.54 ", "sha256": "",
    }


@pytest.mark.parametrize("value", ["plain", "ünï", "utf-8''looks-encoded", " padded ", "tab\there", "%41",
                                   ""])
def test_metadata_encoding_is_reversible(value: str) -> None:
    encoded = encode_meta(value)
    assert encoded.isascii()
    assert encoded == encoded.strip()
    assert decode_meta(encoded) == value


def test_storage_class_and_content_type_are_sent(fake: FakeS3) -> None:
    sink = make(fake, FILESYNC_S3_STORAGE_CLASS="STANDARD_IA")
    small = make_object(CAPS, 2_000)
    big = big_object()
    for obj, body in ((small, small_body(small)[0]), (big, io.BufferedReader(body_for(big)))):
        remote = sink.upload(obj, body, RecordingSession())
        head = fake.head(remote.remote_id)
        assert head.get("StorageClass") == "STANDARD_IA"
        assert head["ContentType"] == obj.mime


def test_prefix_template_and_public_url(fake: FakeS3) -> None:
    sink = make(fake, FILESYNC_S3_PREFIX="/backup/", FILESYNC_S3_TEMPLATE="{kind}/{date:%Y/%m}/{id}{ext}",
                FILESYNC_S3_PUBLIC_URL="https://cdn.example.test/media/")
    obj = make_object(CAPS, 500, file_id="a b", date_taken=datetime(2021, 3, 4, tzinfo=UTC))
    remote = sink.upload(obj, small_body(obj)[0], RecordingSession())
    assert remote.remote_id == "backup/image/2021/03/a b.jpg"
    assert remote.url == "https://cdn.example.test/media/backup/image/2021/03/a%20b.jpg"
    assert [o.key for o in fake.stored()] == [remote.remote_id]


def test_a_changed_size_at_the_same_key_is_uploaded_again(fake: FakeS3) -> None:
    sink = make(fake)
    obj = make_object(CAPS, 1_000)
    sink.upload(obj, small_body(obj)[0], RecordingSession())
    grown = make_object(CAPS, 2_000, file_id=obj.file_id, path=obj.path)
    body, digest = small_body(grown, seed=2)
    again = sink.upload(grown, body, RecordingSession())
    assert not again.existed
    assert [(o.size, o.sha256) for o in fake.stored()] == [(2_000, digest)]


def test_slow_down_is_rate_limited(fake: FakeS3) -> None:
    sink = make(fake)
    obj = make_object(CAPS, 1_000)
    sink.upload(obj, small_body(obj)[0], RecordingSession())  # HEAD answers; the PUT is throttled next
    other = make_object(CAPS, 1_000)
    fake.fail_next(503, method="PUT", body=b"<Error><Code>SlowDown</Code><Message>Reduce your request rate."
                                           b"</Message></Error>")
    with pytest.raises(RateLimited) as caught:
        sink.upload(other, small_body(other)[0], RecordingSession())
    assert caught.value.status == 503
    assert "SlowDown" in caught.value.reason


def test_check_gives_distinct_reasons(fake: FakeS3) -> None:
    reasons: list[str] = []
    for sink in (make(fake, bad_credentials=True), make(fake, FILESYNC_S3_BUCKET="no-such-bucket-here"),
                 make(fake, FILESYNC_S3_ENDPOINT="http://127.0.0.1:9")):
        with pytest.raises(SinkError) as caught:
            sink.check()
        text = str(caught.value)
        assert fake.moto.secret_key not in text and "wrong-secret-value" not in text
        reasons.append(caught.value.reason)
    assert "refused" in reasons[0] and "does not exist" in reasons[1] and "cannot be reached" in reasons[2]
    assert isinstance(caught.value, NetworkError)


def test_part_size_grows_to_stay_within_ten_thousand_parts() -> None:
    assert part_size_for(100 * MIB, 8 * MIB) == 8 * MIB
    size = 200 * 1024 * MIB
    grown = part_size_for(size, 8 * MIB)
    assert grown % MIB == 0 and -(-size // grown) <= 10_000


def test_checksum_is_sha256_of_the_bytes(fake: FakeS3) -> None:
    sink = make(fake)
    obj = make_object(CAPS, 3_000)
    body, digest = small_body(obj)
    remote = sink.upload(obj, body, RecordingSession())
    assert remote.checksum == digest == hashlib.sha256(small_body(obj)[0].read()).hexdigest()
    assert sink.exists(obj) is not None and sink.exists(obj).checksum == digest  # type: ignore[union-attr]


def test_a_key_without_its_secret_is_a_config_error(fake: FakeS3) -> None:
    with pytest.raises(ConfigError, match="FILESYNC_S3_SECRET") as caught:
        make(fake, FILESYNC_S3_SECRET="")
    assert fake.moto.key_id not in str(caught.value)


def test_a_slow_answer_is_a_timeout_not_retried(fake: FakeS3) -> None:
    sink = make(fake, timeout=1.0)
    obj = make_object(CAPS, 1_000)
    fake.slow_next(3.0)
    with pytest.raises(SinkTimeout):
        sink.upload(obj, small_body(obj)[0], RecordingSession())
    assert [r.method for r in fake.requests] == ["HEAD"], "botocore must not retry on its own"
