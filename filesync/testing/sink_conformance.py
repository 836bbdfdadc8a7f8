"""The suite every sink must pass (our `fstests`). Shipped in the package so third-party sinks reuse it.

A `SinkCase` says how to start a fake of the sink's service and how to build the sink against it.
Fakes expose what they stored through `FakeStore`, so the suite can assert on what reached the
service (no duplicate, exact bytes, metadata) without knowing which service it is.

Use it from a test module by providing a `case` fixture and subclassing `SinkConformance`::

    @pytest.fixture
    def case() -> SinkCase:
        return SinkCase(name="mine", fake=FakeMine, make=make_mine)

    class TestMine(SinkConformance):
        pass

Skips come from the sink's `Capabilities` and from what the fake says it can do (`supports_faults`,
`can_corrupt`), never from a sink's name. `known_failures` turns tests into strict xfails, so a
fixed sink makes CI say so. Fakes run in this process: the large-body test measures their memory
too, so a fake must stream what it receives to disk rather than hold it.
"""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from filesync.errors import ConfigError, FilesyncError, PermanentError, RateLimited, ServerError, SinkError
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.sinks import Capabilities, Sink, accepts, check_accepts

MIB = 1024 * 1024
LARGE = 64 * MIB  # the large-body test's size
INTERRUPTED = 12 * MIB  # big enough to span several parts or chunks in most sinks


@dataclass(frozen=True)
class StoredObject:
    """What a fake holds for one object."""

    key: str  # the remote id or object name the sink returned
    size: int
    sha256: str  # hex digest of the stored bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


class FakeStore(Protocol):
    """What the suite needs of every fake (HTTP fakes also subclass testing.fakes.base.FakeService).

    Optional attributes the suite reads with defaults: `supports_faults` (True for FakeService
    subclasses: fail_next works), `can_corrupt` (False: corrupt_next is not implemented), and
    `requests` (FakeService's request log, used to prove a refusal sent nothing).
    """

    def stored(self) -> list[StoredObject]:
        """Every object currently held, one entry per object (duplicates show as two entries)."""

    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, times: int = 1) -> None: ...

    def corrupt_next(self) -> None:
        """Flip a byte of the next upload's body before the service checks it (checksum sinks only)."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def _no_secrets(fake: Any) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class SinkCase:
    """One sink under the conformance suite."""

    name: str  # the sink's registry name
    fake: Callable[[], FakeStore]  # a new, not yet started fake
    make: Callable[..., Sink]  # make(fake, bad_credentials=False) -> Sink pointed at the fake
    known_failures: Mapping[str, str] = field(default_factory=dict)  # test name -> reason (strict xfail)
    # Credential values make() uses (good and bad) that must never show in errors or reprs; string
    # attributes of the fake named like a credential are checked as well.
    secrets: Callable[[Any], Sequence[str]] = _no_secrets


# --- test doubles --------------------------------------------------------------------------------


class RecordingSession:
    """An UploadSession that keeps what a sink told it: saved resume tokens and progress."""

    def __init__(self, resume_token: str | None = None, *, replace: bool = False) -> None:
        self._token = resume_token
        self.saved: list[str | None] = []
        self.progressed: list[int] = []
        self.replace = replace

    @property
    def resume_token(self) -> str | None:
        return self._token

    def save_resume_token(self, token: str | None) -> None:
        self._token = token
        self.saved.append(token)

    def progress(self, nbytes: int) -> None:
        self.progressed.append(nbytes)

    @property
    def total(self) -> int:
        return sum(self.progressed)


_MAGIC = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "image/gif": b"GIF89a",
    "video/mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ",
}
_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
        "video/mp4": ".mp4", "video/quicktime": ".mov"}
_DEFAULT_MIME = {Kind.IMAGE: "image/jpeg", Kind.VIDEO: "video/mp4", Kind.OTHER: "application/octet-stream"}


class GeneratedReader(io.RawIOBase):
    """A seekable body of `size` deterministic bytes made as they are read, never held whole."""

    BLOCK = 64 * 1024

    def __init__(self, size: int, *, seed: int = 0, prefix: bytes = b"",
                 fail_after: int | None = None) -> None:
        self.size = size
        self.seed = seed
        self.prefix = prefix[:size]
        self.fail_after = fail_after
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, index: int) -> bytes:
        return random.Random(self.seed * 1_000_003 + index).randbytes(self.BLOCK)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self.pos)
        if self.fail_after is not None and self.pos + want > self.fail_after:
            if self.pos >= self.fail_after:
                raise OSError(f"injected: the source stream broke at byte {self.pos}")
            want = self.fail_after - self.pos
        done = 0
        while done < want:
            pos = self.pos + done
            if pos < len(self.prefix):
                chunk = self.prefix[pos:pos + want - done]
            else:
                index, start = divmod(pos, self.BLOCK)
                chunk = self._block(index)[start:start + want - done]  # the prefix overlays block 0
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        self.pos += done
        return done

    def sha256(self) -> str:
        """Digest of the whole body, computed by reading a fresh copy in blocks."""
        digest = hashlib.sha256()
        copy = io.BufferedReader(GeneratedReader(self.size, seed=self.seed, prefix=self.prefix), MIB)
        while chunk := copy.read(MIB):
            digest.update(chunk)
        return digest.hexdigest()


class ExplodingReader(io.RawIOBase):
    """A body that must not be read: refusals happen before any byte moves."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the sink read the body of an object it should have refused")


# --- helpers -------------------------------------------------------------------------------------


def pick_kind(caps: Capabilities, prefer: Sequence[Kind] = (Kind.IMAGE, Kind.VIDEO, Kind.OTHER)) -> Kind:
    return next(k for k in prefer if k in caps.kinds)


def pick_mime(caps: Capabilities, kind: Kind) -> str:
    if caps.mimes:
        fitting = sorted(m for m in caps.mimes if m.startswith(f"{kind}/")) or sorted(caps.mimes)
        return fitting[0]
    return _DEFAULT_MIME[kind]


def make_object(caps: Capabilities, size: int, *, file_id: str | None = None, path: str | None = None,
                kind: Kind | None = None, prefer: Sequence[Kind] = (Kind.IMAGE, Kind.VIDEO, Kind.OTHER),
                **extra: Any) -> SourceObject:
    kind = kind or pick_kind(caps, prefer)
    mime = pick_mime(caps, kind)
    file_id = file_id or f"conf-{random.getrandbits(48):012x}"
    path = path or f"uploads/2024/{file_id}{_EXT.get(mime, '.bin')}"
    return SourceObject(file_id=file_id, path=path, size=size, mime=mime, kind=kind, **extra)


def body_for(obj: SourceObject, *, seed: int = 1, fail_after: int | None = None) -> GeneratedReader:
    return GeneratedReader(obj.size, seed=seed, prefix=_MAGIC.get(obj.mime, b""), fail_after=fail_after)


def small_body(obj: SourceObject, seed: int = 1) -> tuple[io.BytesIO, str]:
    """The whole body as bytes (small objects only) and its sha256."""
    data = body_for(obj, seed=seed).read()
    return io.BytesIO(data), hashlib.sha256(data).hexdigest()


def request_count(fake: Any) -> int | None:
    requests = getattr(fake, "requests", None)
    return len(requests) if isinstance(requests, list) else None


def supports_faults(fake: Any) -> bool:
    from filesync.testing.fakes.base import FakeService

    return bool(getattr(fake, "supports_faults", isinstance(fake, FakeService)))


def can_corrupt(fake: Any) -> bool:
    return bool(getattr(fake, "can_corrupt", False))


_CREDENTIAL_WORDS = ("secret", "token", "password", "access_key", "api_key")


def secret_values(case: SinkCase, fake: Any) -> list[str]:
    found = [s for s in case.secrets(fake) if s]
    for attr in dir(fake):
        if not attr.startswith("_") and any(word in attr.lower() for word in _CREDENTIAL_WORDS):
            value = getattr(fake, attr, None)
            if isinstance(value, str) and len(value) >= 8:
                found.append(value)
    return found


def assert_no_secret(text: str, secrets: Sequence[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a credential value leaked into an error or repr"


def same_object(a: RemoteObject | None, b: RemoteObject | None) -> bool:
    return a is not None and b is not None and a.remote_id == b.remote_id and a.size == b.size


def only(stored: list[StoredObject]) -> StoredObject:
    assert len(stored) == 1, f"the fake holds {len(stored)} objects, expected exactly one: {stored}"
    return stored[0]


def assert_not_retried(fake: Any) -> None:
    """The request that got the injected fault was not sent again: retrying is filesync.retrying's job."""
    log = getattr(fake, "requests", None)
    if not isinstance(log, list):
        return
    faulted = [i for i, r in enumerate(log) if getattr(r, "fault", None)]
    assert faulted, "the injected fault was never served"
    first = log[faulted[0]]
    same = (first.method, first.path, first.query)
    again = [r for r in log[faulted[0] + 1:] if (r.method, r.path, r.query) == same]
    assert not again, f"the sink re-sent {first.method} {first.path} itself after a transient error"


def need_faults(fake: Any) -> None:
    if not supports_faults(fake):
        pytest.skip("the fake cannot inject HTTP faults")


# --- the suite -----------------------------------------------------------------------------------


class SinkConformance:
    """Every test takes `sink` and `fake` (built from the `case` fixture the user provides)."""

    @pytest.fixture
    def fake(self, case: SinkCase) -> Iterator[Any]:
        store = case.fake()
        store.start()
        try:
            yield store
        finally:
            store.stop()

    @pytest.fixture
    def sink(self, case: SinkCase, fake: Any) -> Iterator[Sink]:
        built = case.make(fake)
        try:
            yield built
        finally:
            built.close()

    @pytest.fixture(autouse=True)
    def _known_failures(self, request: pytest.FixtureRequest, case: SinkCase) -> None:
        node = request.node
        for name in (node.name, getattr(node, "originalname", node.name)):
            if name in case.known_failures:
                request.applymarker(pytest.mark.xfail(strict=True, reason=case.known_failures[name]))
                return

    def _upload(self, sink: Sink, obj: SourceObject, body: Any,
                session: RecordingSession | None = None) -> RemoteObject:
        """As the pipeline sends: the one capability check, then the sink's upload."""
        check_accepts(sink.name, sink.capabilities, obj)
        return sink.upload(obj, body, session or RecordingSession())

    # --- the basics ------------------------------------------------------------------------------

    def test_upload_new(self, sink: Sink, fake: Any) -> None:
        obj = make_object(sink.capabilities, 200_000)
        body, digest = small_body(obj)
        session = RecordingSession()
        remote = self._upload(sink, obj, body, session)
        assert remote.remote_id
        assert remote.size == obj.size
        assert not remote.existed
        held = only(fake.stored())
        assert (held.size, held.sha256) == (obj.size, digest)
        assert session.total == obj.size, "progress must account for every byte sent"

    def test_upload_again_is_idempotent(self, sink: Sink, fake: Any) -> None:
        obj = make_object(sink.capabilities, 50_000)
        first = self._upload(sink, obj, small_body(obj)[0])
        again = self._upload(sink, obj, small_body(obj)[0])
        assert again.remote_id == first.remote_id
        assert again.existed
        only(fake.stored())

    def test_exists_before_and_after(self, sink: Sink, fake: Any) -> None:
        obj = make_object(sink.capabilities, 30_000)
        assert sink.exists(obj) is None
        remote = self._upload(sink, obj, small_body(obj)[0])
        found = sink.exists(obj)
        assert same_object(found, remote), (found, remote)
        assert same_object(sink.exists(obj, remote.remote_id), remote)

    def test_interrupted_body_leaves_nothing(self, case: SinkCase, sink: Sink, fake: Any) -> None:
        caps = sink.capabilities
        size = min(INTERRUPTED, caps.max_bytes or INTERRUPTED)
        obj = make_object(caps, size, prefer=(Kind.VIDEO, Kind.OTHER, Kind.IMAGE))
        session = RecordingSession()
        with pytest.raises((FilesyncError, OSError)):
            self._upload(sink, obj, io.BufferedReader(body_for(obj, fail_after=size * 2 // 3)), session)
        if caps.resumable and session.resume_token:
            # Resuming is what a restarted process does: a new sink, the token from the ledger.
            fresh = case.make(fake)
            try:
                remote = self._upload(fresh, obj, io.BufferedReader(body_for(obj)),
                                      RecordingSession(session.resume_token))
            finally:
                fresh.close()
            held = only(fake.stored())
            assert (remote.size, held.sha256) == (size, body_for(obj).sha256())
        else:
            assert fake.stored() == [], "an interrupted upload left a visible object"
            assert sink.exists(obj) is None

    @pytest.mark.parametrize(
        ("file_id", "path"),
        [
            ("id with spaces", "folder one/a file name.jpg"),
            ("ünïcødé-ÅØ-日本", "fotos/Ünïcødé ñame 日本.jpg"),
            ("odd?#%&+=chars", "odd/what?#%&+=now.jpg"),
        ],
        ids=["spaces", "unicode", "reserved"],
    )
    def test_awkward_names_round_trip(self, sink: Sink, fake: Any, file_id: str, path: str) -> None:
        obj = make_object(sink.capabilities, 10_000, file_id=file_id, path=path)
        body, digest = small_body(obj)
        remote = self._upload(sink, obj, body)
        assert same_object(sink.exists(obj), remote)
        assert same_object(sink.exists(obj, remote.remote_id), remote)
        held = only(fake.stored())
        assert held.sha256 == digest
        if sink.capabilities.keeps_metadata:
            meta = {k.lower(): v for k, v in held.metadata.items()}
            assert meta.get("path") == obj.path

    @pytest.mark.parametrize("file_id", ["../../escape", "/etc/absolute", "nul\x00byte"],
                             ids=["dotdot", "absolute", "nul"])
    def test_hostile_names_refused_or_contained(self, sink: Sink, fake: Any, file_id: str) -> None:
        """Path-based sinks refuse before any request; id-based ones keep the name as an opaque id."""
        obj = make_object(sink.capabilities, 1_000, file_id=file_id, path="uploads/x.jpg")
        before = request_count(fake)
        try:
            remote = self._upload(sink, obj, small_body(obj)[0])
        except PermanentError as exc:
            assert exc.reason.strip()
            assert request_count(fake) == before, "the refusal was sent to the service"
            assert fake.stored() == []
            return
        assert same_object(sink.exists(obj, remote.remote_id), remote)
        assert len(fake.stored()) == 1

    def test_empty_file(self, sink: Sink, fake: Any) -> None:
        obj = make_object(sink.capabilities, 0)
        try:
            remote = self._upload(sink, obj, io.BytesIO(b""))
        except PermanentError as exc:
            assert exc.reason.strip()
            assert fake.stored() == []
            return
        assert remote.size == 0
        assert only(fake.stored()).sha256 == hashlib.sha256(b"").hexdigest()

    # --- errors ----------------------------------------------------------------------------------

    def test_rate_limited(self, case: SinkCase, sink: Sink, fake: Any) -> None:
        need_faults(fake)
        obj = make_object(sink.capabilities, 5_000)
        fake.fail_next(429, headers={"Retry-After": "2"})
        with pytest.raises(RateLimited) as caught:
            self._upload(sink, obj, small_body(obj)[0])
        assert caught.value.retry_after == 2
        assert caught.value.status == 429
        assert_not_retried(fake)
        assert_no_secret(str(caught.value), secret_values(case, fake))
        self._upload(sink, obj, small_body(obj)[0])  # the next try goes through
        only(fake.stored())

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 524])
    def test_server_error(self, case: SinkCase, sink: Sink, fake: Any, status: int) -> None:
        need_faults(fake)
        obj = make_object(sink.capabilities, 5_000)
        fake.fail_next(status)
        with pytest.raises(ServerError) as caught:
            self._upload(sink, obj, small_body(obj)[0])
        assert caught.value.status == status
        assert_not_retried(fake)
        assert_no_secret(str(caught.value), secret_values(case, fake))
        self._upload(sink, obj, small_body(obj)[0])
        only(fake.stored())

    @pytest.mark.parametrize("status", [400, 403])
    def test_permanent_error(self, case: SinkCase, sink: Sink, fake: Any, status: int) -> None:
        need_faults(fake)
        obj = make_object(sink.capabilities, 5_000)
        # Permanent means the same request fails the same way again; SDKs may re-send once on their
        # own (botocore re-resolves the region after a 400 to HEAD), so the fault persists.
        fake.fail_next(status, times=3)
        with pytest.raises(PermanentError) as caught:
            self._upload(sink, obj, small_body(obj)[0])
        assert caught.value.status == status
        assert caught.value.reason.strip()
        assert_no_secret(str(caught.value), secret_values(case, fake))

    def test_checksum_mismatch_detected(self, sink: Sink, fake: Any) -> None:
        if not sink.capabilities.checksum:
            pytest.skip("the sink's service verifies no checksum")
        if not can_corrupt(fake):
            pytest.skip("the fake cannot corrupt a body")
        obj = make_object(sink.capabilities, 20_000)
        body, digest = small_body(obj)
        fake.corrupt_next()
        with pytest.raises(SinkError):
            self._upload(sink, obj, body)
        assert all(o.sha256 == digest for o in fake.stored()), "corrupted bytes were stored"
        self._upload(sink, obj, small_body(obj)[0])
        assert only(fake.stored()).sha256 == digest

    # --- size and memory -------------------------------------------------------------------------

    def test_large_body_bounded_memory(self, sink: Sink, fake: Any) -> None:
        caps = sink.capabilities
        if caps.max_bytes is not None and caps.max_bytes < LARGE:
            pytest.skip(f"the sink takes at most {caps.max_bytes} bytes")
        obj = make_object(caps, LARGE, prefer=(Kind.VIDEO, Kind.OTHER, Kind.IMAGE))
        reader = body_for(obj, seed=7)
        expected = reader.sha256()
        session = RecordingSession()
        tracemalloc.start()
        try:
            remote = self._upload(sink, obj, io.BufferedReader(reader, MIB), session)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert remote.size == LARGE
        assert only(fake.stored()).sha256 == expected
        assert session.total == LARGE
        assert peak < LARGE // 4, f"peak Python memory {peak / MIB:.1f} MiB for a {LARGE // MIB} MiB body"

    def test_over_size_refused(self, sink: Sink, fake: Any) -> None:
        caps = sink.capabilities
        if caps.max_bytes is None:
            pytest.skip("the sink has no size limit")
        self._assert_refused(sink, fake, make_object(caps, caps.max_bytes + 1,
                                                     prefer=(Kind.VIDEO, Kind.OTHER, Kind.IMAGE)))

    def test_over_dimensions_refused(self, sink: Sink, fake: Any) -> None:
        caps = sink.capabilities
        if Kind.IMAGE not in caps.kinds or (caps.max_dimension is None and caps.max_area is None):
            pytest.skip("the sink has no pixel limit")
        side = (caps.max_dimension or 0) + 1
        if caps.max_area is not None:
            side = max(side, int(caps.max_area**0.5) + 2)
        self._assert_refused(sink, fake, make_object(caps, 1_000, kind=Kind.IMAGE, width=side, height=side))

    def test_unsupported_kind_refused(self, sink: Sink, fake: Any) -> None:
        missing = [k for k in Kind if k not in sink.capabilities.kinds]
        if not missing:
            pytest.skip("the sink accepts every kind")
        obj = SourceObject(file_id="conf-kind", path=f"x{_EXT.get(_DEFAULT_MIME[missing[0]], '.bin')}",
                           size=1_000, mime=_DEFAULT_MIME[missing[0]], kind=missing[0])
        self._assert_refused(sink, fake, obj)

    def _assert_refused(self, sink: Sink, fake: Any, obj: SourceObject) -> None:
        assert accepts(sink.capabilities, obj) is not None
        before = request_count(fake)
        with pytest.raises(PermanentError) as caught:
            self._upload(sink, obj, io.BufferedReader(ExplodingReader()))
        assert caught.value.reason.strip()
        assert request_count(fake) == before, "the refused object reached the service"
        assert fake.stored() == []

    # --- metadata --------------------------------------------------------------------------------

    def test_metadata_kept(self, sink: Sink, fake: Any) -> None:
        if not sink.capabilities.keeps_metadata:
            pytest.skip("the sink keeps no metadata")
        taken = datetime(2023, 7, 14, 9, 30, 5, tzinfo=UTC)
        obj = make_object(sink.capabilities, 8_000, date_taken=taken, gps="48.8584,2.2945",
                          path="photos/été à Paris.jpg")
        self._upload(sink, obj, small_body(obj)[0])
        meta = {k.lower(): v for k, v in only(fake.stored()).metadata.items()}
        assert meta.get("datetaken") == taken.isoformat()
        assert meta.get("gpscoordinates") == "48.8584,2.2945"
        assert meta.get("path") == obj.path

    # --- credentials -----------------------------------------------------------------------------

    def test_check_ok(self, sink: Sink) -> None:
        sink.check()

    def test_check_bad_credentials(self, case: SinkCase, fake: Any) -> None:
        bad = case.make(fake, bad_credentials=True)
        try:
            with pytest.raises((SinkError, ConfigError)) as caught:
                bad.check()
            secrets = secret_values(case, fake)
            assert str(caught.value).strip()
            assert_no_secret(str(caught.value), secrets)
            assert_no_secret(repr(caught.value), secrets)
            assert_no_secret(repr(bad), secrets)
        finally:
            bad.close()
