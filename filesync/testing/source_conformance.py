"""The suite every source must pass (the sources' `fstests`), shipped in the package for third-party sources.

A `SourceCase` says how to get an empty store (a bucket, a folder, a fake Drive) and how to build the
source over it. Stores put objects where the source reads them and, when they serve HTTP, inject
faults on the wire, so the suite checks reads, listings and error classes without knowing the service.

Use it from a test module with a `case` fixture and a subclass::

    @pytest.fixture
    def case() -> SourceCase:
        return SourceCase(name="mine", store=start_store, make=make_mine)

    class TestMine(SourceConformance):
        pass

Skips come from what the store says it can do (`supports_faults`, `counts_listing`), never from a
source's name; `known_failures` turns tests into strict xfails.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pytest

from filesync.errors import SourceError, SourceNotFound, SourceUnavailable
from filesync.sources import Entry, ObjectInfo, Source
from filesync.sources.reader import open_seekable

PAGE = 4  # the page size sources are built with, so a few objects span several pages


class SourceStore(Protocol):
    """Where a case keeps the objects its source reads.

    Optional attributes, read with defaults: `supports_faults` (False: `fail_next` is not available),
    `list_calls()` (listing requests sent so far, None or absent when the store cannot count them).
    """

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def fail_next(self, status: int, *, times: int = 1) -> None:
        """Answer the next `times` requests with `status`, in the service's own error format."""


def _no_secrets(store: Any) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class SourceCase:
    """One source under the conformance suite."""

    name: str  # the source's registry name
    store: Callable[[pytest.FixtureRequest], SourceStore]  # an empty, running store; cleanup via the request
    make: Callable[..., Source]  # make(store, *, page_size, broken=False) -> Source over the store
    transient_statuses: tuple[int, ...] = (429, 500, 503)  # answers a later try may get past
    permanent_statuses: tuple[int, ...] = (403,)  # refusals of one object that no retry changes
    known_failures: Mapping[str, str] = field(default_factory=dict)  # test name -> reason (strict xfail)
    # Credential values that must never appear in an error message or traceback.
    secrets: Callable[[Any], Sequence[str]] = _no_secrets


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def supports_faults(store: Any) -> bool:
    return bool(getattr(store, "supports_faults", False))


def list_calls(store: Any) -> int | None:
    counter = getattr(store, "list_calls", None)
    return counter() if callable(counter) else None


def faults_served(store: Any) -> int | None:
    """Requests the store answered with an injected fault (FakeService's request log), None if it keeps none."""
    log = getattr(store, "requests", None)
    return sum(1 for r in log if getattr(r, "fault", None)) if isinstance(log, list) else None


def read_all(source: Source, key: str, offset: int = 0) -> bytes:
    with source.open(key, offset) as body:
        chunks = []
        while chunk := body.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_no_secret(exc: BaseException, secrets: Sequence[str]) -> None:
    """Nothing a log could print of the error (message, repr, traceback with its causes) holds a secret."""
    shown = "".join(traceback.format_exception(exc)) + repr(exc)
    for secret in secrets:
        if secret:
            assert secret not in shown, "a credential value leaked into an error or its traceback"


def is_transient(exc: SourceError) -> bool:
    return bool(exc.transient) and not isinstance(exc, SourceNotFound)


# Keys that every store must hold and hand back unchanged.
AWKWARD_KEYS = ("folder one/a file name.jpg", "fotos/Ünïcødé ñame 日本.jpg", "odd/what#%&+=now.jpg",
                "quotes/O'Brien's \"best\".jpg")


class SourceConformance:
    """Every test takes `source` and `store`, built from the `case` fixture the user provides."""

    @pytest.fixture
    def store(self, case: SourceCase, request: pytest.FixtureRequest) -> SourceStore:
        return case.store(request)

    @pytest.fixture
    def source(self, case: SourceCase, store: SourceStore) -> Iterator[Source]:
        built = case.make(store, page_size=PAGE)
        try:
            yield built
        finally:
            built.close()

    @pytest.fixture(autouse=True)
    def _known_failures(self, request: pytest.FixtureRequest, case: SourceCase) -> None:
        node = request.node
        for name in (node.name, getattr(node, "originalname", node.name)):
            if name in case.known_failures:
                request.applymarker(pytest.mark.xfail(strict=True, reason=case.known_failures[name]))
                return

    # --- reading ---------------------------------------------------------------------------------

    def test_check_ok(self, source: Source) -> None:
        source.check()

    def test_check_broken_setup(self, case: SourceCase, store: SourceStore) -> None:
        broken = case.make(store, page_size=PAGE, broken=True)
        try:
            with pytest.raises(SourceUnavailable) as caught:
                broken.check()
            assert str(caught.value).strip()
            assert_no_secret(caught.value, case.secrets(store))
            for secret in case.secrets(store):
                assert secret not in repr(broken)
        finally:
            broken.close()

    def test_stat(self, source: Source, store: SourceStore) -> None:
        data = blob(12_345, seed=1)
        store.put("photos/2024/IMG_0001.jpg", data, "image/jpeg")
        info = source.stat("photos/2024/IMG_0001.jpg")
        assert isinstance(info, ObjectInfo)
        assert info.size == len(data)
        assert info.content_type in (None, "image/jpeg")
        assert info.etag is None or (isinstance(info.etag, str) and info.etag)

    def test_read_head(self, source: Source, store: SourceStore) -> None:
        data = blob(5_000, seed=2)
        store.put("head.jpg", data, "image/jpeg")
        assert source.read_head("head.jpg", 256) == data[:256]
        assert source.read_head("head.jpg", 10_000) == data, "a head longer than the object is the object"

    @pytest.mark.parametrize("where", ["start", "second byte", "middle", "last byte"])
    def test_open_from_offset(self, source: Source, store: SourceStore, where: str) -> None:
        data = blob(300_000, seed=3)
        store.put("video/clip.mp4", data, "video/mp4")
        offset = {"start": 0, "second byte": 1, "middle": len(data) // 2, "last byte": len(data) - 1}[where]
        assert read_all(source, "video/clip.mp4", offset) == data[offset:]

    def test_seekable_reader_resumes_anywhere(self, source: Source, store: SourceStore) -> None:
        """What tus and retried uploads do: seek back and forth over one object (reader.py reopens)."""
        data = blob(200_000, seed=4)
        store.put("seek.bin", data)
        with open_seekable(source, "seek.bin", len(data), buffer_size=16_384) as body:
            assert body.read(1000) == data[:1000]
            body.seek(150_000)
            assert body.read(20_000) == data[150_000:170_000]
            body.seek(10)
            assert body.read() == data[10:]

    def test_empty_object(self, source: Source, store: SourceStore) -> None:
        store.put("empty.txt", b"", "text/plain")
        assert source.stat("empty.txt").size == 0
        assert source.read_head("empty.txt", 256) == b""
        assert read_all(source, "empty.txt") == b""

    def test_missing_object(self, source: Source, store: SourceStore) -> None:
        store.put("present.jpg", b"here", "image/jpeg")
        for read in (lambda: source.stat("absent/nothing.jpg"), lambda: source.read_head("absent/nothing.jpg", 10),
                     lambda: read_all(source, "absent/nothing.jpg")):
            with pytest.raises(SourceNotFound) as caught:
                read()
            assert not caught.value.transient
            assert str(caught.value).strip()

    @pytest.mark.parametrize("key", AWKWARD_KEYS, ids=["spaces", "unicode", "reserved", "quotes"])
    def test_awkward_keys(self, case: SourceCase, source: Source, store: SourceStore, key: str) -> None:
        data = blob(2_000, seed=5)
        store.put(key, data, "image/jpeg")
        assert [e.key for e in source.list()] == [key]
        assert source.stat(key).size == len(data)
        assert read_all(source, key, 7) == data[7:]
        fresh = case.make(store, page_size=PAGE)  # another process knows the key only from a catalog
        try:
            assert read_all(fresh, key) == data
        finally:
            fresh.close()

    # --- listing ---------------------------------------------------------------------------------

    def _seed_tree(self, store: SourceStore, count: int) -> dict[str, bytes]:
        layout = ("", "2023/", "2023/summer/", "2024/", "2024/b/")
        objects = {f"{layout[i % len(layout)]}photo-{i:03d}.jpg": blob(100 + i, seed=i) for i in range(count)}
        for key, data in objects.items():
            store.put(key, data, "image/jpeg")
        return objects

    def test_list_everything_across_pages(self, source: Source, store: SourceStore) -> None:
        objects = self._seed_tree(store, PAGE * 3 + 3)
        entries = list(source.list())
        keys = [e.key for e in entries]
        assert len(keys) == len(set(keys)), "a key was listed twice"
        assert set(keys) == set(objects)
        for entry in entries:
            assert isinstance(entry, Entry)
            assert entry.size == len(objects[entry.key])
            assert entry.modified is None or (isinstance(entry.modified, datetime) and entry.modified.tzinfo)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.metadata.items())
        calls = list_calls(store)
        if calls is not None:
            assert calls >= 3, f"{len(objects)} objects in pages of {PAGE} came in {calls} listing requests"

    def test_list_streams(self, source: Source, store: SourceStore) -> None:
        """The first entry arrives before the last page is asked for: a listing is never held whole."""
        before = list_calls(store)
        if before is None:
            pytest.skip("the store cannot count listing requests")
        self._seed_tree(store, PAGE * 4)
        listing = source.list()
        next(listing)
        asked = (list_calls(store) or 0) - before
        rest = sum(1 for _ in listing)
        total = (list_calls(store) or 0) - before
        assert rest == PAGE * 4 - 1
        assert asked < total, f"all {total} listing requests were sent before the first entry was handed out"

    def test_list_entries_match_stat(self, case: SourceCase, source: Source, store: SourceStore) -> None:
        """Listed keys are readable, by this source and by a new one; size and checksum agree with stat."""
        objects = self._seed_tree(store, PAGE + 2)
        fresh = case.make(store, page_size=PAGE)
        try:
            for entry in source.list():
                info = source.stat(entry.key)
                assert info.size == entry.size
                if info.etag and entry.etag:
                    assert info.etag == entry.etag
                assert read_all(fresh, entry.key) == objects[entry.key]
        finally:
            fresh.close()

    def test_list_prefix(self, source: Source, store: SourceStore) -> None:
        objects = self._seed_tree(store, 15)
        objects["2024-notes.jpg"] = b"not in 2024/"
        store.put("2024-notes.jpg", objects["2024-notes.jpg"], "image/jpeg")
        for prefix in ("2024/", "2023/summer/", "2024", "2023/sum", "photo-00", "nothing/", "2024/b/photo-0"):
            listed = sorted(e.key for e in source.list(prefix))
            assert listed == sorted(k for k in objects if k.startswith(prefix)), prefix

    def test_list_empty(self, source: Source) -> None:
        assert list(source.list()) == []

    # --- errors ----------------------------------------------------------------------------------

    def _need_faults(self, store: SourceStore) -> None:
        if not supports_faults(store):
            pytest.skip("the store cannot inject faults")

    def test_transient_error_then_success(self, case: SourceCase, source: Source, store: SourceStore) -> None:
        self._need_faults(store)
        data = blob(50_000, seed=6)
        store.put("flaky.jpg", data, "image/jpeg")
        for status in case.transient_statuses:
            for read in (lambda: source.stat("flaky.jpg").size, lambda: read_all(source, "flaky.jpg", 100)):
                served = faults_served(store)
                store.fail_next(status)
                try:
                    first = read()
                except SourceError as exc:  # classified for the pipeline's retry policy...
                    assert is_transient(exc), f"HTTP {status} must be transient, got {exc!r}"
                    assert_no_secret(exc, case.secrets(store))
                    first = read()
                else:  # ...or retried inside the driver
                    pass
                assert first in (len(data), data[100:]), status
                if served is not None:
                    assert faults_served(store) == served + 1, "the injected fault was never served"

    def test_listing_survives_a_transient_error(self, case: SourceCase, source: Source,
                                                store: SourceStore) -> None:
        """One page failing must not end (or restart and duplicate) a long listing."""
        self._need_faults(store)
        objects = self._seed_tree(store, PAGE * 3)
        listing = source.list()
        keys = [next(listing).key]
        served = faults_served(store)
        store.fail_next(case.transient_statuses[0])
        keys += [e.key for e in listing]
        assert sorted(keys) == sorted(objects)
        if served is not None:
            assert faults_served(store) == served + 1, "the listing asked for no page after the first"

    def test_permanent_error(self, case: SourceCase, source: Source, store: SourceStore) -> None:
        self._need_faults(store)
        store.put("refused.jpg", b"bytes", "image/jpeg")
        for status in case.permanent_statuses:
            # The fault stays for a few requests: drivers may re-send once on their own.
            served = faults_served(store)
            store.fail_next(status, times=3)
            with pytest.raises(SourceError) as caught:
                source.stat("refused.jpg")
            if served is not None:
                assert (faults_served(store) or 0) > served, "the injected fault was never served"
            assert not caught.value.transient, f"HTTP {status} must be permanent, got {caught.value!r}"
            assert str(caught.value).strip()
            assert_no_secret(caught.value, case.secrets(store))
            _drain_faults(store)
            assert source.stat("refused.jpg").size == 5


def _drain_faults(store: Any) -> None:
    calm = getattr(store, "calm", None)
    if callable(calm):
        calm()
