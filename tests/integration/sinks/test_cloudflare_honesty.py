"""The two Cloudflare sinks when the server answers wrongly (issue 9), against FakeCloudflare over real
sockets with the faults injected on the wire: the flag is set only when the destination holds the file,
with its current bytes. A wrong answer may cost a retry; it never yields a RemoteObject for a file the
destination does not hold, and it never parks a file that did arrive."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import pytest
import requests

from filesync.errors import DestinationRefused, ErrorClass, FilesyncError, PermanentError, SinkError, TransientError
from filesync.model import Kind, SourceObject
from filesync.retry import Action, RetryPolicy
from filesync.sinks._cloudflare import CloudflareAccount
from filesync.sinks.cloudflare_images import CloudflareImagesSink
from filesync.sinks.cloudflare_stream import CloudflareStreamSink
from filesync.testing.fakes.cloudflare import FakeCloudflare
from filesync.testing.sink_conformance import GeneratedReader, RecordingSession

KiB = 1024
MiB = 1024 * KiB
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
IMAGES = "/images/v1"


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    """A 256 KiB minimum tus chunk, so multi-chunk videos stay small."""
    with FakeCloudflare(min_chunk=256 * KiB) as server:
        yield server  # type: ignore[misc]


def account(fake: FakeCloudflare, token: str | None = None) -> CloudflareAccount:
    return CloudflareAccount(fake.account_id, token or fake.token, api_base=fake.api_base, rps=200.0)


@pytest.fixture
def images(fake: FakeCloudflare) -> Iterator[CloudflareImagesSink]:
    sink = CloudflareImagesSink(account(fake), timeout=30.0)
    yield sink
    sink.close()


@pytest.fixture
def stream(fake: FakeCloudflare) -> Iterator[CloudflareStreamSink]:
    sink = CloudflareStreamSink(account(fake), timeout=30.0, chunk_size=256 * KiB)
    yield sink
    sink.close()


def photo(file_id: str, version: int = 1, size: int = 4_000) -> tuple[SourceObject, bytes]:
    data = (JPEG + bytes((i * version) % 256 for i in range(256)) * (size // 256 + 1))[:size]
    obj = SourceObject(file_id=file_id, path=f"photos/{file_id}.jpg", size=size, mime="image/jpeg",
                       kind=Kind.IMAGE)
    return obj, data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clip(file_id: str, size: int = 3 * 256 * KiB + 10) -> SourceObject:
    return SourceObject(file_id=file_id, path=f"videos/{file_id}.mp4", size=size, mime="video/mp4",
                        kind=Kind.VIDEO)


def body(obj: SourceObject, seed: int = 3, fail_after: int | None = None) -> io.BufferedReader:
    return io.BufferedReader(GeneratedReader(obj.size, seed=seed, fail_after=fail_after), MiB)


def digest(obj: SourceObject, seed: int = 3) -> str:
    return GeneratedReader(obj.size, seed=seed).sha256()


def uid_of(session: RecordingSession) -> str:
    return str(json.loads(session.resume_token or "{}")["uid"])


def stops_the_destination(exc: BaseException) -> bool:
    return RetryPolicy().decide(exc, tries=1).action is Action.STOP


# --- Images: an unclear answer is resolved by looking the image up -----------------------------------


@pytest.mark.parametrize("how", ["success_false", "truncated", "cut"])
def test_an_image_stored_behind_an_unclear_answer_is_done(fake: FakeCloudflare, images: CloudflareImagesSink,
                                                         how: str) -> None:
    """Before: success:false parked the file for good; a truncated or cut answer cost a second upload."""
    obj, data = photo(f"unclear-{how}")
    fake.misanswer_next(how, method="POST", path_contains=IMAGES)  # type: ignore[arg-type]
    remote = images.upload(obj, io.BytesIO(data), RecordingSession())
    assert (remote.remote_id, remote.existed) == (obj.file_id, False)
    (held,) = fake.images.stored()
    assert (held.key, held.sha256) == (obj.file_id, sha(data))
    assert len(fake.requests_to("POST", IMAGES)) == 1  # recognised from the lookup, not sent again


def test_an_image_stored_behind_a_timeout_is_done(fake: FakeCloudflare) -> None:
    """The answer comes after the client gave up: the lookup finds the stored image. (Before: a timeout,
    and a second upload.) The image is stored before the answer is held, so only ordering matters."""
    sink = CloudflareImagesSink(account(fake), timeout=2.0)
    obj, data = photo("slow-answer")
    fake.hold_response_next(5.0, method="POST", path_contains=IMAGES)
    remote = sink.upload(obj, io.BytesIO(data), RecordingSession())
    sink.close()
    assert remote.remote_id == obj.file_id
    assert [o.sha256 for o in fake.images.stored()] == [sha(data)]


def test_an_unclear_answer_without_the_image_is_retried_not_parked(fake: FakeCloudflare,
                                                                    images: CloudflareImagesSink) -> None:
    """Before: a 200 success:false was a permanent 400, so the file was parked."""
    obj, data = photo("not-stored")
    fake.fail_next(200, body=b'{"success": false, "errors": [], "messages": [], "result": null}',
                   method="POST", path_contains=IMAGES)
    with pytest.raises(TransientError):
        images.upload(obj, io.BytesIO(data), RecordingSession())
    assert fake.images.stored() == []
    assert images.upload(obj, io.BytesIO(data), RecordingSession()).remote_id == obj.file_id
    assert [o.sha256 for o in fake.images.stored()] == [sha(data)]


def test_an_answer_naming_another_image_is_never_success(fake: FakeCloudflare,
                                                          images: CloudflareImagesSink) -> None:
    """Before: the answer's id became the remote id recorded for the file."""
    obj, data = photo("named-wrong")
    fake.misanswer_next("result", method="POST", path_contains=IMAGES, result={"id": "someone-else"})
    with pytest.raises(TransientError) as caught:
        images.upload(obj, io.BytesIO(data), RecordingSession())
    assert "someone-else" in caught.value.reason
    again = images.upload(obj, io.BytesIO(data), RecordingSession())  # 5409, then the lookup
    assert (again.remote_id, again.existed) == (obj.file_id, True)
    assert len(fake.images.stored()) == 1


def upload_directly(fake: FakeCloudflare, image_id: str, data: bytes, meta: dict[str, str]) -> None:
    response = requests.post(
        f"{fake.api_base}/accounts/{fake.account_id}/images/v1",
        headers={"Authorization": f"Bearer {fake.token}"},
        data={"id": image_id, "metadata": json.dumps(meta)},
        files={"file": ("x.jpg", data, "image/jpeg")}, timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("replace", [False, True], ids=["repeat", "replace"])
def test_an_image_of_another_file_at_our_id_is_not_ours(fake: FakeCloudflare, images: CloudflareImagesSink,
                                                        replace: bool) -> None:
    """Before: 5409 then any image at the id counted as done. Now it is neither done nor deleted."""
    obj, data = photo("taken-id")
    theirs = b"\xff\xd8\xff" + b"their bytes" * 50
    upload_directly(fake, obj.file_id, theirs, {"fileId": "another-file"})
    with pytest.raises(PermanentError) as caught:
        images.upload(obj, io.BytesIO(data), RecordingSession(replace=replace))
    assert "another-file" in caught.value.reason
    assert [o.sha256 for o in fake.images.stored()] == [sha(theirs)]
    assert images.exists(obj) is None


def test_replace_puts_the_new_bytes_under_the_same_id(fake: FakeCloudflare, images: CloudflareImagesSink) -> None:
    """Before: 5409 made the older image count as done, so the changed file never reached Images."""
    old, old_data = photo("changed-1", version=1)
    new, new_data = photo("changed-1", version=3, size=5_000)
    images.upload(old, io.BytesIO(old_data), RecordingSession())
    remote = images.upload(new, io.BytesIO(new_data), RecordingSession(replace=True))
    assert (remote.remote_id, remote.existed) == ("changed-1", False)
    (held,) = fake.images.stored()
    assert (held.key, held.size, held.sha256) == ("changed-1", 5_000, sha(new_data))
    assert len(fake.requests_to("DELETE", IMAGES)) == 1


def test_replace_of_an_image_that_is_not_there_uploads_it(fake: FakeCloudflare,
                                                          images: CloudflareImagesSink) -> None:
    """A guard: the delete's 404 is not an error."""
    obj, data = photo("reset-flag")
    remote = images.upload(obj, io.BytesIO(data), RecordingSession(replace=True))
    assert remote.remote_id == obj.file_id
    assert [o.sha256 for o in fake.images.stored()] == [sha(data)]


# --- credentials and quota stop the destination ------------------------------------------------------


def test_a_refused_token_stops_the_destination_without_showing_it(fake: FakeCloudflare) -> None:
    secret = "cf-revoked-token-1234"
    bad = CloudflareImagesSink(account(fake, token=secret), timeout=30.0)
    obj, data = photo("auth-1")
    with pytest.raises(DestinationRefused) as caught:
        bad.upload(obj, io.BytesIO(data), RecordingSession())
    bad.close()
    exc = caught.value
    assert (exc.status, exc.error_class, exc.setting) == (401, ErrorClass.AUTH, "CLOUDFLARE_API_TOKEN")
    assert "refused the credentials" in exc.reason and "(code 10000)" in exc.reason
    assert stops_the_destination(exc)
    assert secret not in str(exc) + repr(exc) and fake.token not in str(exc)


def test_an_auth_code_on_a_400_stops_the_destination(fake: FakeCloudflare, stream: CloudflareStreamSink) -> None:
    """Cloudflare's auth codes, not only 401/403; the token is redacted from an echoing answer."""
    message = f"Invalid access token {fake.token}"
    fake.fail_next(400, body=json.dumps({"success": False, "errors": [{"code": 10000, "message": message}],
                                         "messages": [], "result": None}).encode(), method="PATCH")
    obj = clip("auth-2")
    with pytest.raises(DestinationRefused) as caught:
        stream.upload(obj, body(obj), RecordingSession())
    assert caught.value.error_class is ErrorClass.AUTH and stops_the_destination(caught.value)
    assert fake.token not in str(caught.value) and "<hidden>" in caught.value.reason


def test_images_over_the_accounts_limit_stop_the_destination() -> None:
    with FakeCloudflare(image_limit=1) as server:
        fake: FakeCloudflare = server  # type: ignore[assignment]
        sink = CloudflareImagesSink(account(fake), timeout=30.0)
        first, data = photo("quota-1")
        sink.upload(first, io.BytesIO(data), RecordingSession())
        second, data = photo("quota-2")
        with pytest.raises(DestinationRefused) as caught:
            sink.upload(second, io.BytesIO(data), RecordingSession())
        sink.close()
        exc = caught.value
        assert (exc.error_class, exc.setting) == (ErrorClass.QUOTA, "CLOUDFLARE_ACCOUNT_ID")
        assert "service limit" in exc.reason and stops_the_destination(exc)
        assert [o.key for o in fake.images.stored()] == ["quota-1"]


def test_stream_storage_exceeded_stops_the_destination(fake: FakeCloudflare, stream: CloudflareStreamSink) -> None:
    fake.stream_storage_full = True
    obj = clip("quota-video")
    session = RecordingSession()
    with pytest.raises(DestinationRefused) as caught:
        stream.upload(obj, body(obj), session)
    assert caught.value.error_class is ErrorClass.QUOTA and caught.value.status == 413
    assert stops_the_destination(caught.value)
    assert fake.videos_created == 0 and session.saved == []


# --- Stream: a video is done only when Stream has all of it ------------------------------------------


def test_a_patch_offset_past_the_bytes_sent_is_not_progress(fake: FakeCloudflare,
                                                             stream: CloudflareStreamSink) -> None:
    """Before: the first PATCH claiming the whole length ended the upload with a RemoteObject for a
    video holding a third of the bytes."""
    obj = clip("lying-offset")
    fake.misanswer_next("offset_ahead", method="PATCH")
    session = RecordingSession()
    with pytest.raises(TransientError):
        stream.upload(obj, body(obj), session)
    uid = uid_of(session)
    assert fake.received(uid) == 256 * KiB < obj.size
    remote = stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert remote.remote_id == uid
    assert fake.patch_bytes[uid] == obj.size  # resumed from the real offset: no byte twice
    assert [(o.key, o.sha256) for o in fake.stream.stored()] == [(uid, digest(obj))]


def test_a_patch_offset_that_does_not_advance_is_not_progress(fake: FakeCloudflare,
                                                               stream: CloudflareStreamSink) -> None:
    """The server repeats the offset the chunk started from (a guard: this was refused before too)."""
    obj = clip("stale-offset")
    fake.misanswer_next("offset_stale", method="PATCH")
    session = RecordingSession()
    with pytest.raises(TransientError):
        stream.upload(obj, body(obj), session)
    remote = stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert fake.patch_bytes[remote.remote_id] == obj.size
    assert [o.sha256 for o in fake.stream.stored()] == [digest(obj)]


def test_a_video_still_pending_upload_is_not_done(fake: FakeCloudflare, stream: CloudflareStreamSink) -> None:
    """Before: the lookup after the last chunk was not read, and a resume whose HEAD offset equalled the
    size counted as done, so a video Stream still showed as `pendingupload` got the flag."""
    obj = clip("pending")
    fake.hold_pending = True
    session = RecordingSession()
    with pytest.raises(TransientError) as caught:
        stream.upload(obj, body(obj), session)
    assert "pendingupload" in caught.value.reason
    with pytest.raises(TransientError):
        stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert stream.exists(obj) is None  # nor does a lookup by file count it
    fake.hold_pending = False  # Stream moves it on
    patches = len(fake.requests_to("PATCH"))
    remote = stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert remote.remote_id == uid_of(session) and remote.existed
    assert len(fake.requests_to("PATCH")) == patches
    assert [o.sha256 for o in fake.stream.stored()] == [digest(obj)]


def test_a_head_offset_at_the_size_is_not_proof(fake: FakeCloudflare, stream: CloudflareStreamSink) -> None:
    """Before: a resume whose HEAD answered the full length returned the half-sent video."""
    obj = clip("head-lies")
    session = RecordingSession()
    with pytest.raises((FilesyncError, OSError)):
        stream.upload(obj, body(obj, fail_after=300 * KiB), session)
    uid = uid_of(session)
    assert fake.received(uid) < obj.size
    fake.misanswer_next("offset_ahead", method="HEAD")
    with pytest.raises(TransientError):
        stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    remote = stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert remote.remote_id == uid and fake.received(uid) == obj.size
    assert [o.sha256 for o in fake.stream.stored()] == [digest(obj)]


@pytest.mark.parametrize(
    "wrong",
    [{"uid": "0" * 32}, {"meta": {"fileId": "another-file"}}, {"creator": "another-file"},
     {"size": 3 * 256 * KiB + 9}],
    ids=["other-uid", "other-file-id", "other-creator", "other-size"],
)
def test_a_video_record_that_is_not_this_upload_is_not_done(fake: FakeCloudflare, stream: CloudflareStreamSink,
                                                            wrong: dict[str, object]) -> None:
    """Before: whatever the lookup after the last chunk answered became the RemoteObject."""
    obj = clip("record-" + next(iter(wrong)))
    fake.misanswer_next("result", method="GET", path_contains="/stream/", result=wrong)
    session = RecordingSession()
    with pytest.raises(TransientError):
        stream.upload(obj, body(obj), session)
    remote = stream.upload(obj, body(obj), RecordingSession(session.resume_token))
    assert remote.remote_id == uid_of(session)
    assert [o.sha256 for o in fake.stream.stored()] == [digest(obj)]


def test_replace_uploads_the_new_video_then_drops_the_older(fake: FakeCloudflare,
                                                             stream: CloudflareStreamSink) -> None:
    """Before: the older video of the file was found and returned as already there."""
    old_obj, new_obj = clip("changed-video"), clip("changed-video", size=2 * 256 * KiB + 99)
    old = stream.upload(old_obj, body(old_obj, seed=3), RecordingSession())
    remote = stream.upload(new_obj, body(new_obj, seed=4), RecordingSession(replace=True))
    assert remote.remote_id != old.remote_id and not remote.existed
    assert [v.uid for v in fake.videos()] == [remote.remote_id]
    assert [o.sha256 for o in fake.stream.stored()] == [digest(new_obj, seed=4)]
    # the older copy went only after the new one was complete
    log = fake.requests
    dropped = next(i for i, r in enumerate(log) if r.method == "DELETE" and r.path.endswith(old.remote_id))
    last_patch = max(i for i, r in enumerate(log) if r.method == "PATCH" and r.path.endswith(remote.remote_id))
    assert dropped > last_patch


def test_replace_keeps_the_older_video_while_the_new_one_is_incomplete(fake: FakeCloudflare,
                                                                        stream: CloudflareStreamSink) -> None:
    old_obj, new_obj = clip("changed-2"), clip("changed-2")
    old = stream.upload(old_obj, body(old_obj, seed=3), RecordingSession())
    session = RecordingSession(replace=True)
    with pytest.raises((FilesyncError, OSError)):
        stream.upload(new_obj, body(new_obj, seed=5, fail_after=300 * KiB), session)
    assert fake.video(old.remote_id) is not None  # the user still has the older copy meanwhile
    resumed = RecordingSession(session.resume_token, replace=True)
    remote = stream.upload(new_obj, body(new_obj, seed=5), resumed)
    assert [v.uid for v in fake.videos()] == [remote.remote_id] != [old.remote_id]
    assert [o.sha256 for o in fake.stream.stored()] == [digest(new_obj, seed=5)]


def test_without_replace_a_complete_video_of_the_file_is_done(fake: FakeCloudflare,
                                                              stream: CloudflareStreamSink) -> None:
    """A guard: without replace, the stricter checks still find the finished video."""
    obj = clip("same-video")
    first = stream.upload(obj, body(obj), RecordingSession())
    again = stream.upload(obj, body(obj), RecordingSession())
    assert (again.remote_id, again.existed) == (first.remote_id, True)
    assert fake.videos_created == 1


def test_no_error_text_carries_the_token(fake: FakeCloudflare, images: CloudflareImagesSink) -> None:
    """A guard: an unclear answer that echoes the token, then a lookup that does the same."""
    fake.fail_next(200, body=f'{{"success": false, "errors": [{{"code": 5400, "message": "{fake.token}"}}]}}'
                   .encode(), times=2)
    obj, data = photo("echo")
    with pytest.raises(SinkError) as caught:
        images.upload(obj, io.BytesIO(data), RecordingSession())
    assert fake.token not in str(caught.value) + repr(caught.value)
