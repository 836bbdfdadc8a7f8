"""A Google Drive folder shared as "anyone with the link", read with an API key (Drive API v3, plain requests).

Keys are Drive paths below the folder ("trip/IMG_1.jpg"), as the issue asks, so catalogs, logs and
path-based sinks show names people recognise. Drive is not a path store, so a key is mapped to a file id:

- `list()` remembers the id of every key it yields (a bounded LRU, so a huge folder does not pin memory);
- any other key, e.g. from a catalog written by another process, is resolved by walking its folders
  with one `name = '...'` query per segment (folder ids are cached, so files of one folder cost one query);
- `id:<fileId>` addresses a file directly; every entry also carries its id as metadata `driveFileId`.

Drive allows two files with the same name in one folder, and names with "/" in them. Within a folder the
oldest file (by createdTime) keeps its plain name and the others get their id before the extension
("IMG_1~<fileId>.jpg"); a name no path can hold ("/", "\\", ".", "..") is cleaned and gets its id too. The
oldest wins so that a duplicate added later never renames a file already catalogued.

Google Workspace files (Docs, Sheets, Slides, Forms, shortcuts...) have no bytes to download. They are
listed, with `metadata[SKIP]` holding the reason, so a catalog can record them as skipped; `stat`/`open`
refuse them with the same reason (SourceRefused, error class "unsupported").

The API key travels as the `key` query parameter, as Google's own client library sends it, so it is in
every URL: no URL, and no exception from requests (which carry it), ever reaches an error message here.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, BinaryIO, ClassVar, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

import requests

from filesync import http
from filesync.errors import ErrorClass, SourceError, SourceNotFound, SourceRefused, SourceUnavailable
from filesync.retry import RetryPolicy
from filesync.settings import Setting, boolean, http_url, setting, settings_of
from filesync.sources import SKIP, Entry, ObjectInfo, SourceContext

DEFAULT_API_BASE = "https://www.googleapis.com"
FOLDER_MIME = "application/vnd.google-apps.folder"
WORKSPACE_PREFIX = "application/vnd.google-apps."
MAX_PAGE_SIZE = 1000  # files.list refuses more
#: 403 reasons Google's client library retries (googleapiclient.http._should_retry_response).
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
#: 403 reasons that pass with time but not within a run: a public file's 24-hour download quota.
QUOTA_REASONS = frozenset({"downloadQuotaExceeded", "dailyLimitExceeded"})
#: Reasons meaning the key (or its project) is refused: a problem of the whole source, not of one file.
KEY_REASONS = frozenset({
    "keyInvalid", "keyExpired", "API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED", "accessNotConfigured", "SERVICE_DISABLED",
    "ipRefererBlocked", "dailyLimitExceededUnreg",
})
_LIST_FIELDS = ("nextPageToken, files(id, name, mimeType, size, md5Checksum, modifiedTime, resourceKey, "
                "imageMediaMetadata(time, location))")
_FILE_FIELDS = "id, name, mimeType, size, md5Checksum, modifiedTime, resourceKey, trashed, parents"
_LOOKUP_FIELDS = "nextPageToken, files(id, name, mimeType, resourceKey)"
_ID = re.compile(r"[A-Za-z0-9_-]{10,}")
_ID_SUFFIX = re.compile(r"~(?P<id>[A-Za-z0-9_-]{10,})(?P<ext>\.[^./~]{1,10})?$")
_EXT = re.compile(r"\.[^./~]{1,10}")
_WORKSPACE_NAMES = {
    "document": "Google Docs document", "spreadsheet": "Google Sheets spreadsheet",
    "presentation": "Google Slides presentation", "form": "Google Forms form", "drawing": "Google Drawing",
    "shortcut": "Drive shortcut", "site": "Google Sites site", "script": "Apps Script project",
    "map": "Google My Maps map", "jam": "Jamboard", "folder": "folder",
}
ID_PREFIX = "id:"
READ_CHUNK = 64 * 1024


class FolderRef(NamedTuple):
    id: str
    resource_key: str | None = None


def parse_folder(raw: str) -> FolderRef:
    """A folder link as Drive's "Share" dialog gives it, or a bare id. Links of old shares carry
    `?resourcekey=`, which is kept: without it such a folder cannot be read."""
    raw = raw.strip()
    if _ID.fullmatch(raw):
        return FolderRef(raw)
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname or not parts.hostname.endswith("google.com"):
        raise ValueError("must be a Drive folder link (https://drive.google.com/drive/folders/<id>) or a folder id")
    query = parse_qs(parts.query)
    resource_key = next(iter(query.get("resourcekey", [])), None)
    segments = [s for s in parts.path.split("/") if s]
    folder_id = segments[segments.index("folders") + 1] if "folders" in segments[:-1] else None
    folder_id = folder_id or next(iter(query.get("id", [])), None)
    if not folder_id or not _ID.fullmatch(folder_id):
        raise ValueError("names no folder id: use the link of a folder (https://drive.google.com/drive/folders/<id>)")
    return FolderRef(folder_id, resource_key)


@dataclass(frozen=True)
class _Item:
    id: str
    resource_key: str | None = None
    folder: bool = False


@dataclass(frozen=True)
class GDriveSettings:
    folder: FolderRef = setting("GDRIVE_FOLDER", "Google Drive folder shared as \"anyone with the link\": its link "
                                "or its id.", required=True, parse=parse_folder, group="Source")
    api_key: str = setting("GDRIVE_API_KEY", "Google Cloud API key with the Drive API enabled.", required=True,
                           secret=True, group="Source")
    recursive: bool = setting("GDRIVE_RECURSIVE", "Also read the folder's subfolders (keys are paths below the "
                              "folder).", default="true", parse=boolean, group="Source")
    resource_key: str | None = setting("GDRIVE_RESOURCE_KEY", "Resource key of a folder shared by link before 2021 "
                                       "(the `resourcekey=` of its link); taken from GDRIVE_FOLDER's link when it "
                                       "has one.", group="Source")
    api_base: str = setting("GDRIVE_API_BASE", "Base URL of the Drive API (tests point it at a fake).",
                            default=DEFAULT_API_BASE, parse=http_url, group="Source")


class GDriveSource:
    name: ClassVar[str] = "gdrive"
    Settings: ClassVar[type[GDriveSettings]] = GDriveSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(GDriveSettings)
    #: Requests per second shared by every transfer of the process: Drive's default quota is 12,000
    #: queries a minute per project, and a public folder's key is often shared with other tools.
    RATE = 20.0
    KNOWN_KEYS = 100_000  # key -> file id entries kept from listings and look-ups

    def __init__(
        self, folder_id: str, api_key: str, *, recursive: bool = True, resource_key: str | None = None,
        api_base: str = DEFAULT_API_BASE, page_size: int = MAX_PAGE_SIZE, timeout: float = 120.0,
        pacer: http.Pacer | None = None, retry: RetryPolicy | None = None,
    ) -> None:
        self.folder_id = folder_id
        self._api_key = api_key
        self.recursive = recursive
        self.api_base = api_base.rstrip("/")
        self.page_size = max(1, min(MAX_PAGE_SIZE, page_size))
        self._pacer = pacer or http.pacer("gdrive", self.RATE, burst=int(self.RATE))
        self._session = http.make_session(timeout=timeout, pacer=self._pacer)
        self._retry = retry or RetryPolicy()
        self._root = _Item(folder_id, resource_key, folder=True)
        self._known: OrderedDict[str, _Item] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, values: GDriveSettings, context: SourceContext | None = None) -> GDriveSource:
        context = context or SourceContext()
        return cls(
            values.folder.id, values.api_key, recursive=values.recursive,
            resource_key=values.resource_key or values.folder.resource_key,
            api_base=values.api_base, timeout=context.http_timeout,
        )

    def __repr__(self) -> str:
        return f"GDriveSource(folder={self.folder_id!r}, api_base={self.api_base!r})"

    # --- the contract -----------------------------------------------------------------------------

    def check(self) -> None:
        """Reads the folder, then lists one page: proves the key, the folder and its sharing."""
        self._check_root()
        try:
            self._list_page(self._root, None, page_size=1)
        except SourceError as exc:
            raise SourceUnavailable(f"Google Drive folder {self.folder_id} cannot be listed: {exc}") from None

    def stat(self, key: str) -> ObjectInfo:
        item = self._resolve(key)
        meta = self._file(item, key, _FILE_FIELDS)
        if meta.get("trashed"):
            raise SourceNotFound("not found in the Drive folder (in the trash)")
        mime = str(meta.get("mimeType") or "") or None
        if mime == FOLDER_MIME:
            raise SourceNotFound(f"{key!r} is a folder, not a file")
        if mime and mime.startswith(WORKSPACE_PREFIX):
            raise _unsupported(mime)
        return ObjectInfo(size=int(meta.get("size") or 0), content_type=mime, etag=meta.get("md5Checksum"))

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Breadth first, one folder's pages at a time (each page retried on its own); subfolders wait in a
        queue of ids, so memory holds the folders and the names of one folder, never every file."""
        self._check_root()  # an unreadable folder lists as empty: it must not read as "everything is gone"
        if "/" in prefix and not self.recursive:
            return
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            start = self._resolve_path(base, folder=True) if base else self._root
        except SourceNotFound:
            return
        queue: deque[tuple[str, _Item]] = deque([(base, start)])
        while queue:
            path, folder = queue.popleft()
            names: dict[bool, set[str]] = {True: set(), False: set()}  # seen in this folder: folders, files
            for raw in self._children(folder):
                is_folder = raw.get("mimeType") == FOLDER_MIME
                name = str(raw.get("name") or "")
                segment = _segment(name, str(raw["id"]), duplicate=name in names[is_folder])
                names[is_folder].add(name)
                key = f"{path}/{segment}" if path else segment
                item = _Item(str(raw["id"]), raw.get("resourceKey"), is_folder)
                if is_folder:
                    if self.recursive and ((key + "/").startswith(prefix) or prefix.startswith(key + "/")):
                        self._remember(key + "/", item)
                        queue.append((key, item))
                elif key.startswith(prefix):
                    self._remember(key, item)
                    yield _entry(key, raw)

    def read_head(self, key: str, n: int) -> bytes:
        if n <= 0:
            return b""
        with self._download(key, 0, n - 1) as body:
            return body.read(n)

    def open_with_info(self, key: str) -> tuple[ObjectInfo, BinaryIO]:
        """Drive answers facts and bytes on two calls (files.get, then alt=media)."""
        info = self.stat(key)
        return info, self.open(key)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        return self._download(key, offset, None)

    def close(self) -> None:
        self._session.close()

    # --- requests ---------------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str], item: _Item | None, *, stream: bool = False,
             headers: Mapping[str, str] | None = None) -> requests.Response:
        sent = dict(headers or {})
        if item is not None and item.resource_key:
            sent["X-Goog-Drive-Resource-Keys"] = f"{item.id}/{item.resource_key}"
        try:
            return self._session.get(f"{self.api_base}{path}", params={**params, "key": self._api_key},
                                     headers=sent, stream=stream)
        except requests.RequestException as exc:
            raise _network_error(exc) from None  # the exception's text holds the URL, and so the key

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            if response.status_code >= 400:
                raise self._error(response, what)
            data = response.json()
        except (ValueError, requests.RequestException) as exc:
            raise _network_error(exc, "Google Drive sent an unreadable answer") from None
        finally:
            response.close()
        if not isinstance(data, dict):
            raise _network_error(None, "Google Drive sent an unreadable answer")
        return data

    def _error(self, response: requests.Response, what: str) -> SourceError:
        """The one place a Drive status and reason become an error class."""
        status = response.status_code
        reason, message = _google_reason(response)
        message = message.replace(self._api_key, "<key>") if self._api_key else message
        detail = f"HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else "")
        if status == 404:
            return SourceNotFound(f"{what} not found in the Drive folder ({detail})")
        if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
            if status == 403:  # a 429 has already paused the shared pacer (filesync.http)
                self._pacer.pause(http.retry_after(response.headers) or 1.0)
            return _transient(f"Google Drive rate limit reading {what} ({detail})", ErrorClass.RATE_LIMITED)
        if status >= 500:
            return _transient(f"Google Drive failed reading {what} ({detail})", ErrorClass.SERVER)
        if reason in QUOTA_REASONS:
            return _transient(f"Google Drive quota reached reading {what} ({detail})", ErrorClass.RATE_LIMITED)
        if reason in KEY_REASONS or status == 401 or (status == 403 and "api key" in message.lower()):
            err = _transient(f"Google Drive refused the API key ({detail})", ErrorClass.CLIENT)
            err.stops_destination = True  # type: ignore[attr-defined]  # the whole source, not this file
            return err
        if reason == "fileNotDownloadable":
            return _unsupported(None)
        return SourceRefused(f"Google Drive refused {what} ({detail})")

    def _check_root(self) -> None:
        hint = ("GDRIVE_RESOURCE_KEY does not match it" if self._root.resource_key else
                "it is an old link that needs GDRIVE_RESOURCE_KEY (the resourcekey= of the link)")
        try:
            meta = self._json(self._get(f"/drive/v3/files/{quote(self.folder_id)}",
                                        {"fields": "id, name, mimeType", "supportsAllDrives": "true"},
                                        self._root), f"folder {self.folder_id}")
        except SourceNotFound:
            raise SourceUnavailable(
                f"Google Drive folder {self.folder_id} cannot be read: it does not exist, it is not shared as "
                f"\"anyone with the link\", or {hint}") from None
        except SourceError as exc:
            raise SourceUnavailable(f"Google Drive folder {self.folder_id} cannot be read: {exc}") from None
        if meta.get("mimeType") != FOLDER_MIME:
            raise SourceUnavailable(f"GDRIVE_FOLDER {self.folder_id} is a file ({meta.get('mimeType')}), "
                                    f"not a folder")

    def _list_page(self, folder: _Item, token: str | None, *, page_size: int | None = None,
                   query: str = "", fields: str = _LIST_FIELDS) -> dict[str, Any]:
        params = {
            "q": f"'{_quote(folder.id)}' in parents and trashed = false{query}",
            "pageSize": str(page_size or self.page_size), "fields": fields, "orderBy": "createdTime",
            "supportsAllDrives": "true", "includeItemsFromAllDrives": "true",
        }
        if token:
            params["pageToken"] = token
        return self._json(self._get("/drive/v3/files", params, folder), f"folder {folder.id}")

    def _children(self, folder: _Item) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._retry.call(_bind(self._list_page, folder, token))
            yield from page.get("files") or ()
            token = page.get("nextPageToken")
            if not token:
                return

    def _file(self, item: _Item, key: str, fields: str) -> dict[str, Any]:
        return self._json(self._get(f"/drive/v3/files/{quote(item.id)}",
                                    {"fields": fields, "supportsAllDrives": "true"}, item), repr(key))

    def _download(self, key: str, start: int, end: int | None) -> io.BufferedReader:
        item = self._resolve(key)
        if item.folder:
            raise SourceNotFound(f"{key!r} is a folder")
        headers = {"Accept-Encoding": "identity"}  # a compressed answer would shift every Range offset
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = self._get(f"/drive/v3/files/{quote(item.id)}", {"alt": "media", "supportsAllDrives": "true"},
                             item, stream=True, headers=headers)
        if response.status_code == 416:  # reading from the end of the object (or an empty one)
            response.close()
            return io.BufferedReader(_Body(None, key))
        if response.status_code >= 400:
            try:
                raise self._error(response, repr(key))
            finally:
                response.close()
        body = _Body(response, key)
        if response.status_code == 206:
            served = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not served or int(served.group(1)) != start:
                body.close()
                raise _transient(f"Google Drive answered {key!r} with the wrong range", ErrorClass.SERVER)
        elif start:  # the Range was ignored: skip to the offset rather than hand out the wrong bytes
            body.skip(start)
        return io.BufferedReader(body, READ_CHUNK)

    # --- keys -------------------------------------------------------------------------------------

    def _remember(self, key: str, item: _Item) -> None:
        with self._lock:
            self._known[key] = item
            self._known.move_to_end(key)
            while len(self._known) > self.KNOWN_KEYS:
                self._known.popitem(last=False)

    def _recall(self, key: str) -> _Item | None:
        with self._lock:
            item = self._known.get(key)
            if item is not None:
                self._known.move_to_end(key)
            return item

    def _resolve(self, key: str) -> _Item:
        if key.startswith(ID_PREFIX):
            file_id = key[len(ID_PREFIX):]
            if not _ID.fullmatch(file_id):
                raise SourceNotFound(f"{key!r} is not a Drive file id")
            return _Item(file_id)
        return self._resolve_path(key)

    def _resolve_path(self, key: str, *, folder: bool = False) -> _Item:
        """Walks from the deepest folder already known, one name query per segment left.

        Remembered folders end in "/", so a file and a folder of the same name never share an entry.
        """
        item = self._recall(key + "/" if folder else key)
        if item is not None:
            return item
        segments = key.split("/")
        if not all(segments):
            raise SourceNotFound(f"{key!r} is not a path in the Drive folder")
        depth, parent = 0, self._root
        for i in range(len(segments) - 1, 0, -1):
            known = self._recall("/".join(segments[:i]) + "/")
            if known is not None:
                depth, parent = i, known
                break
        for i in range(depth, len(segments)):
            want_folder = folder or i < len(segments) - 1
            parent = self._child(parent, segments[i], folder=want_folder, key=key)
            self._remember("/".join(segments[: i + 1]) + ("/" if want_folder else ""), parent)
        return parent

    def _child(self, parent: _Item, segment: str, *, folder: bool, key: str) -> _Item:
        """No retry here: a look-up is part of the caller's request, which the pipeline retries whole."""
        kind = f" and mimeType {'=' if folder else '!='} '{FOLDER_MIME}'"
        token: str | None = None
        while True:  # Drive may answer a page with no files and a token: only the token's absence is "none"
            page = self._list_page(parent, token, page_size=10, query=f" and name = '{_quote(segment)}'{kind}",
                                   fields=_LOOKUP_FIELDS)
            found = page.get("files") or []
            if found:  # oldest first (orderBy=createdTime): the one that keeps the plain name
                first = found[0]
                return _Item(str(first["id"]), first.get("resourceKey"), first.get("mimeType") == FOLDER_MIME)
            token = page.get("nextPageToken")
            if not token:
                break
        named = _ID_SUFFIX.search(segment)
        if named:
            meta = self._file(_Item(named.group("id")), key, _FILE_FIELDS)
            if (parent.id in (meta.get("parents") or []) and not meta.get("trashed")
                    and (meta.get("mimeType") == FOLDER_MIME) == folder):
                return _Item(str(meta["id"]), meta.get("resourceKey"), meta.get("mimeType") == FOLDER_MIME)
        raise SourceNotFound(f"{key!r} not found in the Drive folder")


class _Body(io.RawIOBase):
    """A download's bytes; read errors arrive as SourceError, without the URL their text would carry."""

    def __init__(self, response: requests.Response | None, key: str) -> None:
        self._response = response
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._response is None:
            return 0
        view = memoryview(buffer).cast("B")
        try:
            data = self._response.raw.read(len(view))
        except Exception as exc:  # urllib3 and requests read errors alike: the connection broke
            raise _network_error(exc, f"reading {self._key!r} broke off") from None
        view[: len(data)] = data
        return len(data)

    def skip(self, n: int) -> None:
        buffer = bytearray(READ_CHUNK)
        while n > 0:
            got = self.readinto(memoryview(buffer)[: min(n, READ_CHUNK)])
            if not got:
                raise _transient(f"{self._key!r} ended before the resume offset", ErrorClass.NETWORK)
            n -= got

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        super().close()


# --- helpers ----------------------------------------------------------------------------------------


def _bind(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> Callable[[], dict[str, Any]]:
    return lambda: fn(*args, **kwargs)


def _quote(value: str) -> str:
    """A string literal inside a Drive query: backslash and quote escaped."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _transient(message: str, error_class: ErrorClass) -> SourceError:
    err = SourceError(message)
    err.error_class = error_class
    return err


def _unsupported(mime: str | None) -> SourceRefused:
    err = SourceRefused(workspace_reason(mime))
    err.error_class = ErrorClass.UNSUPPORTED
    return err


def _network_error(exc: BaseException | None, what: str = "Google Drive cannot be reached") -> SourceError:
    """Only the exception's class name: requests' messages quote the URL, and so the API key."""
    if isinstance(exc, requests.Timeout) or "Timeout" in type(exc).__name__:
        return _transient(f"{what}: timed out ({type(exc).__name__})", ErrorClass.TIMEOUT)
    suffix = f" ({type(exc).__name__})" if exc is not None else ""
    return _transient(f"{what}{suffix}", ErrorClass.NETWORK)


def _google_reason(response: requests.Response) -> tuple[str, str]:
    """(reason, message) of Google's error body: `error.errors[0].reason`, else the ErrorInfo detail's."""
    try:
        error = json.loads(response.content[:65536] or b"{}").get("error") or {}
    except (ValueError, AttributeError, requests.RequestException):
        return "", ""
    if not isinstance(error, dict):
        return "", str(error)[:200]
    reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
    reasons += [d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)]
    known = [r for r in reasons if r in KEY_REASONS]  # "badRequest" alone would hide API_KEY_INVALID
    reason = (known or [r for r in reasons if r] or [""])[0]
    return str(reason), str(error.get("message") or "")[:300]


def workspace_reason(mime: str | None) -> str:
    """The reason recorded for a Workspace file: it has no bytes, only exports to other formats."""
    kind = (mime or "").removeprefix(WORKSPACE_PREFIX)
    label = _WORKSPACE_NAMES.get(kind, f"Google Workspace file ({kind})" if kind else "Google Workspace file")
    return f"{label}: Google Workspace files cannot be downloaded"


def _segment(name: str, file_id: str, *, duplicate: bool) -> str:
    """One path segment for a Drive name; see the module docstring for when the id is added."""
    clean = name.replace("/", "_").replace("\\", "_").replace("\x00", "")
    if len(clean) > 1 and clean[1] == ":":
        clean = clean[0] + "_" + clean[2:]  # "c:x" would read as a drive letter, an absolute path
    if not duplicate and clean == name and clean not in ("", ".", ".."):
        return clean
    path = PurePosixPath(clean or "_")
    stem, ext = (path.stem, path.suffix) if _EXT.fullmatch(path.suffix) and path.stem else (clean, "")
    return f"{stem}~{file_id}{ext}"


def _entry(key: str, raw: Mapping[str, Any]) -> Entry:
    mime = str(raw.get("mimeType") or "") or None
    meta = {"driveFileId": str(raw["id"])}
    image = raw.get("imageMediaMetadata") or {}
    taken = exif_time(image.get("time"))
    if taken:
        meta["dateTaken"] = taken
    gps = coordinates(image.get("location"))
    if gps:
        meta["gpsCoordinates"] = gps
    if mime and mime.startswith(WORKSPACE_PREFIX):
        meta[SKIP] = workspace_reason(mime)
    modified = None
    if raw.get("modifiedTime"):
        try:
            modified = datetime.fromisoformat(str(raw["modifiedTime"]))
        except ValueError:
            modified = None
    return Entry(key=key, size=int(raw.get("size") or 0), etag=raw.get("md5Checksum"), content_type=mime,
                 modified=modified, metadata=meta)


def exif_time(value: object) -> str | None:
    """EXIF's "2019:07:01 12:30:00" (no zone: the camera's clock) as ISO 8601 without a zone; None for
    the all-zero and malformed dates cameras write."""
    if not isinstance(value, str):
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt).isoformat()
        except ValueError:
            continue
    return None


def coordinates(location: object) -> str | None:
    """Drive's `location` as the app table's "lat,lon"."""
    if not isinstance(location, dict):
        return None
    lat, lon = location.get("latitude"), location.get("longitude")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return f"{_number(lat)},{_number(lon)}"


def _number(value: float) -> str:
    return f"{value:.7f}".rstrip("0").rstrip(".")
