"""Google Drive specifics beyond the conformance suite, against FakeDrive over a real socket."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import parse_qs

import pytest
import requests

from filesync.errors import ConfigError, ErrorClass, SourceError, SourceNotFound, SourceRefused, SourceUnavailable
from filesync.http import Pacer
from filesync.retry import RetryPolicy
from filesync.settings import Environment
from filesync.sources import SKIP, Entry
from filesync.sources.gdrive import FolderRef, GDriveSource, parse_folder
from filesync.sources.reader import open_seekable
from filesync.testing.fakes.base import free_port
from filesync.testing.fakes.gdrive import FakeDrive, google_error

FOLDER_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


@pytest.fixture
def drive() -> Iterator[FakeDrive]:
    with FakeDrive() as fake:
        assert isinstance(fake, FakeDrive)
        yield fake


def source_for(drive: FakeDrive, **kw: object) -> GDriveSource:
    options: dict[str, object] = {"api_base": drive.url, "timeout": 10.0, "pacer": Pacer(1000.0, burst=100),
                                  "retry": RetryPolicy(base=0.01, max_wait=0.05), **kw}
    key = str(options.pop("api_key", drive.api_key))
    folder = str(options.pop("folder", drive.root_id))
    return GDriveSource(folder, key, **options)  # type: ignore[arg-type]


def image(i: int, size: int = 300) -> bytes:
    return (JPEG + i.to_bytes(4, "big") * size)[:size]


def query(request: object) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(getattr(request, "query", ""), keep_blank_values=True).items()}


def no_key_in(exc: BaseException, *keys: str) -> None:
    shown = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    for key in keys:
        assert key not in shown, "the API key leaked into an exception"


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing", FolderRef(FOLDER_ID)),
    (f"https://drive.google.com/drive/u/0/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
    (f"https://drive.google.com/drive/folders/{FOLDER_ID}?resourcekey=0-AbC_dEf&usp=sharing",
     FolderRef(FOLDER_ID, "0-AbC_dEf")),
    (f"https://drive.google.com/open?id={FOLDER_ID}", FolderRef(FOLDER_ID)),
    (f"  {FOLDER_ID}  ", FolderRef(FOLDER_ID)),
])
def test_folder_links_and_ids(raw: str, expected: FolderRef) -> None:
    assert parse_folder(raw) == expected


@pytest.mark.parametrize("raw", ["https://example.com/drive/folders/abcdefghijkl", "https://drive.google.com/drive/my-drive",
                                 "not a folder", "https://drive.google.com/drive/folders/"])
def test_bad_folder_names_the_variable(raw: str) -> None:
    env = Environment({"GDRIVE_FOLDER": raw, "GDRIVE_API_KEY": "AIzaSecretKey-123456"}, env_file="/nonexistent")
    with pytest.raises(ConfigError) as caught:
        env.load(GDriveSource.Settings)
    assert "GDRIVE_FOLDER" in str(caught.value)
    assert "AIzaSecretKey-123456" not in str(caught.value)


def test_from_settings(drive: FakeDrive) -> None:
    link = f"https://drive.google.com/drive/folders/{drive.root_id}?resourcekey=0-fromTheLink&usp=sharing"
    env = Environment({"GDRIVE_FOLDER": link, "GDRIVE_API_KEY": drive.api_key, "GDRIVE_API_BASE": drive.url},
                      env_file="/nonexistent")
    values = env.load(GDriveSource.Settings)
    source = GDriveSource.from_settings(values)
    try:
        assert (source.folder_id, source.recursive, source.page_size) == (drive.root_id, True, 1000)
        assert drive.api_key not in repr(source)
        source.check()
        assert drive.requests[0].headers["x-goog-drive-resource-keys"] == f"{drive.root_id}/0-fromTheLink"
    finally:
        source.close()
    secrets = {s.env for s in GDriveSource.SETTINGS if s.secret}
    assert secrets == {"GDRIVE_API_KEY"}
    assert env.secret_values(GDriveSource.SETTINGS) == [drive.api_key]


# --- listing -------------------------------------------------------------------------------------


def seed_library(drive: FakeDrive) -> dict[str, bytes]:
    """A few hundred photos over nested folders, plus what must not be listed as copyable files."""
    expected: dict[str, bytes] = {}
    folders = ("", "2019/", "2019/Paris trip/", "2020/", "2020/a/b/c/", "scans/")
    for i in range(320):
        key = f"{folders[i % len(folders)]}IMG_{i:04d}.jpg"
        expected[key] = image(i, 200 + i % 50)
        drive.add_file(key, expected[key], mime="image/jpeg")
    for i in range(5):
        drive.add_file(f"2019/deleted-{i}.jpg", image(i), trashed=True)
    return expected


def test_hundreds_of_files_in_short_pages(drive: FakeDrive) -> None:
    expected = seed_library(drive)
    docs = {"2019/Itinerary": "document", "budget": "spreadsheet", "2020/a/slides": "presentation",
            "2020/shortcut to photos": "shortcut"}
    for path, kind in docs.items():
        drive.add_workspace_doc(path, kind)
    drive.short_pages = True
    source = source_for(drive, page_size=50)
    entries = list(source.list())
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    files = {e.key: e for e in entries if SKIP not in e.metadata}
    assert set(files) == set(expected)
    assert {e.key for e in entries if SKIP in e.metadata} == set(docs)
    assert all(files[k].size == len(expected[k]) for k in expected)
    lists = [query(r) for r in drive.requests_to("GET", "/drive/v3/files") if r.path == "/drive/v3/files"]
    assert all("nextPageToken" in q["fields"] and "trashed = false" in q["q"] for q in lists)
    assert all(q["pageSize"] == "50" and q["supportsAllDrives"] == "true" for q in lists)
    assert sum(1 for q in lists if "pageToken" in q) >= 320 // 50, "short pages must be followed by their token"
    assert len(drive.file_requests()) == 1, "listing reads the folder once, and no file"


def test_workspace_files_are_listed_with_a_skip_reason_and_refused(drive: FakeDrive) -> None:
    doc = drive.add_workspace_doc("notes/Trip plan", "document")
    drive.add_workspace_doc("notes/Costs", "spreadsheet")
    (plan, costs) = sorted(source_for(drive).list(), key=lambda e: e.key, reverse=True)
    assert plan.key == "notes/Trip plan" and plan.size == 0
    assert plan.metadata[SKIP] == "Google Docs document: Google Workspace files cannot be downloaded"
    assert costs.metadata[SKIP].startswith("Google Sheets spreadsheet")
    source = source_for(drive)
    for read in (lambda: source.stat("notes/Trip plan"), lambda: source.open(f"id:{doc}").read()):
        with pytest.raises(SourceRefused) as caught:
            read()
        assert caught.value.error_class is ErrorClass.UNSUPPORTED
        assert "cannot be downloaded" in str(caught.value)
        assert not caught.value.transient


def test_not_recursive_lists_the_folder_only(drive: FakeDrive) -> None:
    drive.add_file("top.jpg", image(1))
    drive.add_file("sub/deeper.jpg", image(2))
    source = source_for(drive, recursive=False)
    assert [e.key for e in source.list()] == ["top.jpg"]
    assert list(source.list("sub/")) == []


def test_capture_date_and_location_become_metadata(drive: FakeDrive) -> None:
    taken = drive.add_file("a.jpg", image(1), time="2019:07:01 12:30:00", location=(48.8584, 2.2945))
    drive.add_file("b.jpg", image(2), time="0000:00:00 00:00:00", location=(123.0, 2.0))
    drive.add_file("c.jpg", image(3))
    entries = {e.key: e for e in source_for(drive).list()}
    assert entries["a.jpg"].metadata == {"driveFileId": taken, "dateTaken": "2019-07-01T12:30:00",
                                         "gpsCoordinates": "48.8584,2.2945"}
    assert datetime.fromisoformat(entries["a.jpg"].metadata["dateTaken"]).tzinfo is None, "EXIF has no zone"
    assert set(entries["b.jpg"].metadata) == {"driveFileId"}, "all-zero dates and impossible places are dropped"
    assert entries["c.jpg"].etag == drive.item(entries["c.jpg"].metadata["driveFileId"]).resource()["md5Checksum"]
    modified = entries["c.jpg"].modified
    assert modified is not None and modified.utcoffset() is not None
    assert entries["c.jpg"].content_type == "image/jpeg"


def test_duplicate_and_slashed_names_get_their_id_and_stay_stable(drive: FakeDrive) -> None:
    first = drive.add_file("album/photo.jpg", image(1))
    second = drive.add_file("album/photo.jpg", image(2))
    slashed = drive.add_file("album/x", image(3), name="2019/07 beach.jpg")
    before = {e.key for e in source_for(drive).list()}
    assert before == {"album/photo.jpg", f"album/photo~{second}.jpg", f"album/2019_07 beach~{slashed}.jpg"}
    drive.add_file("album/photo.jpg", image(4))  # a newer duplicate renames nobody already listed
    after = {e.key for e in source_for(drive).list()}
    assert before < after and len(after) == 4
    fresh = source_for(drive)  # another process, knowing only the keys
    assert fresh.open("album/photo.jpg").read() == image(1)
    assert fresh.open(f"album/photo~{second}.jpg").read() == image(2)
    assert fresh.open(f"album/2019_07 beach~{slashed}.jpg").read() == image(3)
    assert fresh.stat(f"id:{first}").size == len(image(1))
    with pytest.raises(SourceNotFound):
        fresh.stat("id:not an id")


def test_a_fresh_source_resolves_paths_with_one_query_per_unknown_folder(drive: FakeDrive) -> None:
    drive.add_file("2019/Paris trip/IMG_1.jpg", image(1))
    drive.add_file("2019/Paris trip/IMG_2.jpg", image(2))
    source = source_for(drive)
    start = drive.list_calls()
    assert source.stat("2019/Paris trip/IMG_1.jpg").size == len(image(1))
    assert drive.list_calls() - start == 3, "one name query per segment"
    assert source.read_head("2019/Paris trip/IMG_2.jpg", 4) == image(2)[:4]
    assert drive.list_calls() - start == 4, "the folders are remembered"
    with pytest.raises(SourceNotFound):
        source.stat("2019/Rome trip/IMG_1.jpg")
    with pytest.raises(SourceNotFound):
        source.stat("2019/Paris trip")  # a folder is not a file


# --- errors --------------------------------------------------------------------------------------


def test_rate_limits_and_server_errors_during_a_listing_are_retried(drive: FakeDrive) -> None:
    expected = seed_library(drive)
    pacer = Pacer(1000.0, burst=100)
    source = source_for(drive, page_size=40, pacer=pacer)
    listing = source.list()
    keys = [next(listing).key]
    drive.rate_limit_next(403, "userRateLimitExceeded")
    drive.rate_limit_next(403, "rateLimitExceeded")
    drive.rate_limit_next(429, "rateLimitExceeded", retry_after="0")
    drive.fail_next(503)
    keys += [e.key for e in listing]
    assert sorted(keys) == sorted(expected)
    faulted = [r for r in drive.requests if r.fault]
    assert [r.status for r in faulted] == [403, 403, 429, 503]
    assert pacer.waited >= 2.0, "each rate limit holds back every transfer through the shared pacer"


@pytest.mark.parametrize(("status", "reason", "transient", "error_class"), [
    (403, "userRateLimitExceeded", True, ErrorClass.RATE_LIMITED),
    (403, "rateLimitExceeded", True, ErrorClass.RATE_LIMITED),
    (429, "rateLimitExceeded", True, ErrorClass.RATE_LIMITED),
    (403, "downloadQuotaExceeded", True, ErrorClass.RATE_LIMITED),
    (500, "backendError", True, ErrorClass.SERVER),
    (403, "insufficientFilePermissions", False, ErrorClass.CLIENT),
    (403, "cannotDownloadAbusiveFile", False, ErrorClass.CLIENT),
    (400, "invalid", False, ErrorClass.CLIENT),
])
def test_error_classes(drive: FakeDrive, status: int, reason: str, transient: bool,
                       error_class: ErrorClass) -> None:
    drive.add_file("x.jpg", image(1))
    source = source_for(drive, pacer=Pacer(1000.0, burst=100))
    next(source.list())  # the key's id is known: the fault hits the download itself
    body = google_error(status, reason, f"injected {reason}")
    drive.fail_next(status, body=json.dumps(body).encode(), path_contains="/files/")
    with pytest.raises(SourceError) as caught:
        source.open("x.jpg")
    assert caught.value.transient is transient
    assert caught.value.error_class is error_class
    assert not isinstance(caught.value, SourceNotFound)
    assert reason in str(caught.value), "the reason is recorded with the failure"
    assert isinstance(caught.value, SourceRefused) is (not transient)
    assert source.open("x.jpg").read() == image(1)


def test_deleted_and_trashed_files_are_not_found(drive: FakeDrive) -> None:
    gone = drive.add_file("gone.jpg", image(1))
    binned = drive.add_file("binned.jpg", image(2))
    source = source_for(drive)
    assert {e.key for e in source.list()} == {"gone.jpg", "binned.jpg"}
    drive.delete(gone)
    drive.trash(binned)
    for key in ("gone.jpg", "binned.jpg"):
        with pytest.raises(SourceNotFound) as caught:
            source.stat(key)
        assert not caught.value.transient
    with pytest.raises(SourceNotFound):
        source.open("gone.jpg").read()


@pytest.mark.parametrize("key", ["", "AIzaWrongKey-0000000000000000000000000"], ids=["missing", "wrong"])
def test_missing_or_wrong_api_key(drive: FakeDrive, key: str) -> None:
    drive.add_file("x.jpg", image(1))
    source = source_for(drive, api_key=key)
    for call in (source.check, lambda: next(source.list())):
        with pytest.raises(SourceUnavailable) as caught:
            call()
        assert "API key" in str(caught.value)
        if key:
            no_key_in(caught.value, key)
    with pytest.raises(SourceError) as refused:
        source.stat("x.jpg")
    assert getattr(refused.value, "stops_destination", False), "a refused key is the whole source's problem"
    assert [r.status for r in drive.requests] == [403 if not key else 400] * len(drive.requests)


def test_legacy_key_invalid_answer(drive: FakeDrive) -> None:
    body = {"error": {"errors": [{"domain": "usageLimits", "reason": "keyInvalid", "message": "Bad Request"}],
                      "code": 400, "message": "Bad Request"}}
    drive.fail_next(400, body=json.dumps(body).encode())
    with pytest.raises(SourceUnavailable) as caught:
        source_for(drive).check()
    assert "keyInvalid" in str(caught.value) and "API key" in str(caught.value)


def test_check_reads_the_folder_and_lists_one_page(drive: FakeDrive) -> None:
    for i in range(5):
        drive.add_file(f"{i}.jpg", image(i))
    source_for(drive).check()
    (folder, page) = drive.requests
    assert folder.path == f"/drive/v3/files/{drive.root_id}"
    assert page.path == "/drive/v3/files" and query(page)["pageSize"] == "1"


def test_check_a_file_or_an_unknown_folder(drive: FakeDrive) -> None:
    file_id = drive.add_file("x.jpg", image(1))
    with pytest.raises(SourceUnavailable, match="not a folder"):
        source_for(drive, folder=file_id).check()
    with pytest.raises(SourceUnavailable, match="anyone with the link"):
        source_for(drive, folder="1NoSuchFolder000000000000000000000").check()


def test_resource_key_folder() -> None:
    with FakeDrive(root_resource_key="0-rootKey") as drive:
        assert isinstance(drive, FakeDrive)
        drive.add_file("a.jpg", image(1))
        locked = drive.add_file("sub/b.jpg", image(2), resource_key="0-fileKey")
        without = source_for(drive)
        with pytest.raises(SourceUnavailable, match="GDRIVE_RESOURCE_KEY"):
            without.check()
        with pytest.raises(SourceUnavailable, match="GDRIVE_RESOURCE_KEY"):
            list(without.list())  # never an empty listing: a catalog would mark every file gone
        wrong = source_for(drive, resource_key="0-notIt")
        with pytest.raises(SourceUnavailable, match="does not match"):
            wrong.check()
        source = source_for(drive, resource_key="0-rootKey")
        source.check()
        assert sorted(e.key for e in source.list()) == ["a.jpg", "sub/b.jpg"]
        assert source.open("sub/b.jpg").read() == image(2), "the file's own key came with the listing"
        (download,) = drive.downloads()
        assert download.headers["x-goog-drive-resource-keys"] == f"{locked}/0-fileKey"


# --- downloads -----------------------------------------------------------------------------------


def test_ranges(drive: FakeDrive) -> None:
    data = image(7, 100_000)
    drive.add_file("v.mp4", data, mime="video/mp4")
    source = source_for(drive)
    assert source.read_head("v.mp4", 256) == data[:256]
    assert source.open("v.mp4", 70_000).read() == data[70_000:]
    assert source.open("v.mp4", len(data)).read() == b"", "from the end: nothing, not an error"
    ranges = [r.headers.get("range") for r in drive.downloads()]
    assert ranges == ["bytes=0-255", "bytes=70000-", f"bytes={len(data)}-"]
    assert all(r.headers.get("accept-encoding") == "identity" for r in drive.downloads())


def test_a_download_cut_off_resumes_from_where_it_broke(drive: FakeDrive) -> None:
    data = image(9, 300_000)
    file_id = drive.add_file("clip.mp4", data, mime="video/mp4")
    source = source_for(drive)
    next(source.list())
    with open_seekable(source, "clip.mp4", len(data), buffer_size=65_536) as body:
        start = body.read(100_000)
        drive.reset_next(path_contains=file_id)
        body.seek(150_000)
        with pytest.raises(SourceError) as caught:
            body.read(10)
        assert caught.value.transient
        no_key_in(caught.value, drive.api_key)
        body.seek(150_000)
        rest = body.read()
    assert start + data[100_000:150_000] + rest == data
    assert drive.downloads()[-1].headers["range"] == "bytes=150000-"


def test_api_key_in_no_exception(drive: FakeDrive) -> None:
    key = "AIzaNeverShowThisKey-0123456789abcdef"
    closed = source_for(drive, api_key=key, api_base=f"http://127.0.0.1:{free_port()}")
    errors: list[BaseException] = []
    for call in (closed.check, lambda: next(closed.list()), lambda: closed.stat("a.jpg"),
                 lambda: closed.open("id:1AbCdEfGhIjKlMnOpQr").read()):
        with pytest.raises((SourceError, SourceUnavailable)) as caught:
            call()
        errors.append(caught.value)
    slow = source_for(drive, timeout=0.2)
    drive.add_file("s.jpg", image(1))
    drive.slow_next(1.0)
    with pytest.raises(SourceError) as timed_out:
        slow.stat("s.jpg")
    assert timed_out.value.error_class is ErrorClass.TIMEOUT
    errors.append(timed_out.value)
    for exc in errors:
        no_key_in(exc, key, drive.api_key)
        assert "Google Drive" in str(exc)


def test_entries_are_immutable_records() -> None:
    entry = Entry(key="a.jpg", size=1, metadata={"dateTaken": "2019-07-01T12:30:00"})
    with pytest.raises(AttributeError):
        entry.size = 2  # type: ignore[misc]
    assert hash(entry) == hash(Entry(key="a.jpg", size=1, metadata={}))


def test_the_fake_answers_like_drive(drive: FakeDrive) -> None:
    """What the source relies on in the fake, asked directly over HTTP (the fake's own contract)."""
    for i in range(3):
        drive.add_file(f"{i}.jpg", image(i))
    url = f"{drive.url}/drive/v3/files"
    base = {"q": f"'{drive.root_id}' in parents and trashed = false", "pageSize": "2", "key": drive.api_key}
    with requests.Session() as http:
        silent = http.get(url, params={**base, "fields": "files(id, name)"}, timeout=10).json()
        assert len(silent["files"]) == 2 and "nextPageToken" not in silent, "no token unless fields names it"
        named = http.get(url, params={**base, "fields": "nextPageToken, files(id)"}, timeout=10).json()
        assert set(named) == {"nextPageToken", "files"} and set(named["files"][0]) == {"id"}
        rest = http.get(url, params={**base, "pageToken": named["nextPageToken"]}, timeout=10).json()
        assert len(rest["files"]) == 1 and "nextPageToken" not in rest
        assert set(rest["files"][0]) == {"kind", "id", "name", "mimeType"}, "files.list's default fields"
        too_big = http.get(url, params={**base, "pageSize": "1001"}, timeout=10)
        assert too_big.status_code == 400 and too_big.json()["error"]["errors"][0]["reason"] == "invalid"
        for params, status in (({**base, "key": ""}, 403), ({**base, "key": "AIzaWrong"}, 400)):
            refused = http.get(url, params=params, timeout=10)
            error = refused.json()["error"]
            assert refused.status_code == error["code"] == status
            assert {"reason", "domain", "message"} <= set(error["errors"][0])
        media = http.get(f"{url}/{named['files'][0]['id']}", params={"alt": "media", "key": drive.api_key},
                         headers={"Range": "bytes=2-5"}, timeout=10)
        assert media.status_code == 206 and media.headers["Content-Range"].startswith("bytes 2-5/")
