"""Cloudflare Stream specifics against FakeCloudflare's tus server over real sockets: Stream's chunk rules,
the resume token saved before any byte, resuming after a broken body, and one video per file."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from filesync.errors import FilesyncError, PermanentError, RateLimited, ServerError
from filesync.model import Kind, SourceObject
from filesync.sinks._cloudflare import CloudflareAccount
from filesync.sinks.cloudflare_stream import CloudflareStreamSink, creator_of
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import GeneratedReader, RecordingSession

MiB = 1024 * 1024
KiB = 1024


def make_sink(fake: FakeCloudflare, chunk: int = 5 * MiB, token: str | None = None) -> CloudflareStreamSink:
    account = CloudflareAccount(fake.account_id, token or fake.token, api_base=fake.api_base, rps=200.0)
    return CloudflareStreamSink(account, timeout=30.0, chunk_size=chunk)


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    """Stream's real minimum chunk (5 MiB)."""
    with FakeCloudflare() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def small_fake() -> Iterator[FakeCloudflare]:
    """A 256 KiB minimum chunk, so multi-chunk uploads stay small."""
    with FakeCloudflare(min_chunk=256 * KiB) as server:
        yield server  # type: ignore[misc]


def video(file_id: str, size: int, **extra: object) -> SourceObject:
    return SourceObject(file_id=file_id, path=f"videos/{file_id}.mp4", size=size, mime="video/mp4",
                        kind=Kind.VIDEO, **extra)  # type: ignore[arg-type]


def body(obj: SourceObject, fail_after: int | None = None) -> io.BufferedReader:
    return io.BufferedReader(GeneratedReader(obj.size, seed=3, fail_after=fail_after), MiB)


def digest(obj: SourceObject) -> str:
    return GeneratedReader(obj.size, seed=3).sha256()


class OrderedSession(RecordingSession):
    """Records, at each token save, how many PATCHes the server had already seen."""

    def __init__(self, fake: FakeCloudflare, resume_token: str | None = None) -> None:
        super().__init__(resume_token)
        self.fake = fake
        self.events: list[tuple[str, int]] = []

    def save_resume_token(self, token: str | None) -> None:
        self.events.append(("save", len(self.fake.requests_to("PATCH"))))
        super().save_resume_token(token)

    def progress(self, nbytes: int) -> None:
        self.events.append(("progress", len(self.fake.requests_to("PATCH"))))
        super().progress(nbytes)


def test_12_mib_in_three_patches_within_streams_rules(fake: FakeCloudflare) -> None:
    obj = video("three-chunks", 12 * MiB + 123)
    remote = make_sink(fake).upload(obj, body(obj), RecordingSession())
    sizes = fake.patch_sizes[remote.remote_id]
    assert sizes == [5 * MiB, 5 * MiB, 2 * MiB + 123]
    assert all(s % (256 * KiB) == 0 and s >= 5 * MiB for s in sizes[:-1])
    (held,) = fake.stream.stored()
    assert (held.key, held.size, held.sha256) == (remote.remote_id, obj.size, digest(obj))
    assert len(remote.remote_id) == 32 and int(remote.remote_id, 16) >= 0
    details = fake.video(remote.remote_id)
    assert details is not None and details.ready


@pytest.mark.parametrize(("chunk", "why"), [(300 * KiB, "multiple of 256KiB"), (MiB, "at least")])
def test_the_fake_refuses_chunks_stream_would_refuse(fake: FakeCloudflare, chunk: int, why: str) -> None:
    obj = video(f"bad-chunk-{chunk}", 6 * MiB)
    with pytest.raises(PermanentError) as caught:
        make_sink(fake, chunk=chunk).upload(obj, body(obj), RecordingSession())
    assert caught.value.status == 400
    assert why in caught.value.reason
    assert fake.patch_bytes_total == 0


def test_resume_token_is_saved_before_any_patch(small_fake: FakeCloudflare) -> None:
    obj = video("order-1", 3 * 256 * KiB + 10)
    session = OrderedSession(small_fake)
    remote = make_sink(small_fake, chunk=256 * KiB).upload(obj, body(obj), session)
    assert session.events[0] == ("save", 0)
    assert [e for e, _ in session.events] == ["save", "progress", "progress", "progress", "progress"]
    token = json.loads(session.saved[0] or "")
    assert token["uid"] == remote.remote_id
    assert token["url"].endswith(remote.remote_id)
    assert session.total == obj.size


def test_metadata_and_creator_reach_stream(small_fake: FakeCloudflare) -> None:
    taken = datetime(2020, 2, 29, 8, 0, tzinfo=UTC)
    obj = video("meta-video", 1000, date_taken=taken, gps="51.5,-0.12")
    remote = make_sink(small_fake).upload(obj, body(obj), RecordingSession())
    held = small_fake.video(remote.remote_id)
    assert held is not None
    assert held.creator == "meta-video"
    assert held.meta == {"name": "meta-video", "fileId": "meta-video", "path": obj.path,
                         "dateTaken": taken.isoformat(), "gpsCoordinates": "51.5,-0.12"}
    (create,) = small_fake.requests_to("POST", "/stream")
    pairs = dict(p.split(" ") for p in create.headers["upload-metadata"].split(","))
    assert base64.b64decode(pairs["name"]).decode() == "meta-video"
    assert create.headers["tus-resumable"] == "1.0.0"


def test_interrupted_upload_resumes_with_only_the_missing_bytes(small_fake: FakeCloudflare) -> None:
    chunk = 1 * MiB
    obj = video("resume-1", 5 * MiB + 77)
    sink = make_sink(small_fake, chunk=chunk)
    session = RecordingSession()
    with pytest.raises((FilesyncError, OSError)):
        sink.upload(obj, body(obj, fail_after=chunk + 300 * KiB), session)
    token = json.loads(session.resume_token or "")
    uid = token["uid"]
    held_after_break = sink._offset(token["url"])  # tus HEAD
    assert held_after_break == small_fake.received(uid)
    assert chunk <= held_after_break < obj.size
    patches_before = len(small_fake.requests_to("PATCH"))

    resumed = RecordingSession(session.resume_token)
    remote = sink.upload(obj, body(obj), resumed)
    assert remote.remote_id == uid
    assert resumed.saved == []  # the same upload went on; nothing new was created
    assert resumed.total == obj.size - held_after_break
    assert small_fake.patch_bytes[uid] == obj.size  # no byte was received twice
    assert small_fake.requests_to("HEAD")  # the offset came from the server
    assert len(small_fake.requests_to("PATCH")) > patches_before
    assert len(small_fake.videos()) == small_fake.videos_created == 1
    (held,) = small_fake.stream.stored()
    assert held.sha256 == digest(obj)


def test_upload_twice_without_token_is_one_video(small_fake: FakeCloudflare) -> None:
    obj = video("twice-1", 700 * KiB)
    sink = make_sink(small_fake, chunk=256 * KiB)
    first = sink.upload(obj, body(obj), RecordingSession())
    patched = small_fake.patch_bytes_total
    again = sink.upload(obj, body(obj), RecordingSession())
    assert again.remote_id == first.remote_id and again.existed and not first.existed
    assert small_fake.videos_created == 1
    assert small_fake.patch_bytes_total == patched
    assert sink.exists(obj) is not None and sink.exists(obj, first.remote_id) is not None


def test_ids_that_cannot_be_a_creator_still_dedupe(small_fake: FakeCloudflare) -> None:
    obj = video("vidéo " + "x" * 80, 2000)
    assert creator_of(obj.file_id) != obj.file_id and len(creator_of(obj.file_id)) <= 64
    sink = make_sink(small_fake)
    first = sink.upload(obj, body(obj), RecordingSession())
    again = sink.upload(obj, body(obj), RecordingSession())
    assert again.remote_id == first.remote_id and again.existed
    assert small_fake.videos_created == 1


def test_a_pending_orphan_is_replaced_not_duplicated(small_fake: FakeCloudflare) -> None:
    """Token lost after creation (crash before the ledger write): the stale pending video is cleared."""
    obj = video("orphan-1", 2 * MiB)
    sink = make_sink(small_fake, chunk=MiB)
    with pytest.raises((FilesyncError, OSError)):
        sink.upload(obj, body(obj, fail_after=MiB + 10), RecordingSession())
    remote = sink.upload(obj, body(obj), RecordingSession())
    assert [v.uid for v in small_fake.videos()] == [remote.remote_id]
    assert small_fake.videos_created == 2


def test_token_of_a_deleted_upload_starts_over(small_fake: FakeCloudflare) -> None:
    obj = video("gone-1", 600 * KiB)
    sink = make_sink(small_fake, chunk=256 * KiB)
    first = RecordingSession()
    with pytest.raises((FilesyncError, OSError)):
        sink.upload(obj, body(obj, fail_after=300 * KiB), first)
    old = json.loads(first.resume_token or "")["uid"]
    sink._delete(old)
    session = RecordingSession(first.resume_token)
    remote = sink.upload(obj, body(obj), session)
    assert remote.remote_id != old
    assert session.saved[0] is None and json.loads(session.saved[1] or "")["uid"] == remote.remote_id
    assert [v.uid for v in small_fake.videos()] == [remote.remote_id]


def test_token_of_a_finished_upload_sends_nothing(small_fake: FakeCloudflare) -> None:
    obj = video("done-1", 1000)
    sink = make_sink(small_fake)
    session = RecordingSession()
    first = sink.upload(obj, body(obj), session)
    patches = len(small_fake.requests_to("PATCH"))
    again = sink.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert again.remote_id == first.remote_id and again.existed
    assert len(small_fake.requests_to("PATCH")) == patches


def test_429_on_a_patch_is_rate_limited_then_resumes(small_fake: FakeCloudflare) -> None:
    obj = video("limited-1", 600 * KiB)
    sink = make_sink(small_fake, chunk=256 * KiB)
    session = RecordingSession()
    small_fake.fail_next(429, headers={"Retry-After": "1"}, method="PATCH")
    with pytest.raises(RateLimited) as caught:
        sink.upload(obj, body(obj), session)
    assert caught.value.retry_after == 1
    remote = sink.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert small_fake.videos_created == 1
    assert small_fake.stream.stored()[0].key == remote.remote_id


def test_server_error_on_a_patch_is_transient(small_fake: FakeCloudflare) -> None:
    obj = video("flaky-1", 600 * KiB)
    small_fake.fail_next(524, method="PATCH")
    with pytest.raises(ServerError) as caught:
        make_sink(small_fake, chunk=256 * KiB).upload(obj, body(obj), RecordingSession())
    assert caught.value.status == 524


def test_over_the_accounts_limit_is_permanent() -> None:
    with FakeCloudflare(max_video_bytes=1000) as fake:
        obj = video("huge-1", 5000)
        with pytest.raises(PermanentError) as caught:
            make_sink(fake).upload(obj, body(obj), RecordingSession())  # type: ignore[arg-type]
        assert caught.value.status == 413
        assert "maximum upload size" in caught.value.reason


def test_bad_token_check_fails_without_showing_it(small_fake: FakeCloudflare,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    secret = "cf-wrong-stream-token-77"
    bad = make_sink(small_fake, token=secret)
    with pytest.raises(PermanentError) as caught:
        bad.check()
    assert "refused the credentials" in caught.value.reason
    out = capsys.readouterr()
    assert secret not in str(caught.value) + repr(caught.value) + repr(bad) + out.out + out.err
    make_sink(small_fake).check()


def test_from_settings_reads_the_chunk_size(small_fake: FakeCloudflare) -> None:
    from filesync.errors import ConfigError
    from filesync.settings import Environment
    from filesync.sinks import SinkContext

    base = {"CLOUDFLARE_ACCOUNT_ID": small_fake.account_id, "CLOUDFLARE_API_TOKEN": small_fake.token,
            "CLOUDFLARE_API_BASE": small_fake.api_base, "FILESYNC_CLOUDFLARE_RPS": "200"}
    values = Environment(base, env_file="/nonexistent").load(CloudflareStreamSink.Settings)
    sink = CloudflareStreamSink.from_settings(values, SinkContext(http_timeout=5.0))
    assert sink.chunk_size == 52428800
    sink.check()
    with pytest.raises(ConfigError, match="FILESYNC_TUS_CHUNK_BYTES"):
        Environment({**base, "FILESYNC_TUS_CHUNK_BYTES": "1000000"}, env_file="/nonexistent").load(
            CloudflareStreamSink.Settings)
