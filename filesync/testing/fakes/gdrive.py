"""A local stand-in for the Drive API v3 (www.googleapis.com/drive/v3) as an API key sees a public folder.

What it keeps of the real service, because the source depends on it:

- `files.list` with the `q` clauses the source sends (`'<id>' in parents`, `trashed = false`,
  `name = '...'`, `mimeType = / != '...'`), `orderBy`, `pageSize` (1 to 1,000) and opaque page
  tokens; `nextPageToken` only when `fields` names it (or `fields` is absent), as Drive does, so a
  client that forgets it silently gets the first page only; `short_pages` returns fewer files than
  asked (sometimes none) while more remain.
- `files.get` with a `fields` mask, and `alt=media` downloads with `Range` (206 + Content-Range, 416);
  Workspace files and folders answer 403 `fileNotDownloadable`.
- The API key (`key=` or `X-Goog-Api-Key`): missing -> 403, wrong -> 400 `API_KEY_INVALID`, in
  Google's error shape. Items with a resource key are invisible (404, and absent from listings of
  their children) unless `X-Goog-Drive-Resource-Keys: <id>/<key>` names them.
- A folder the key cannot see lists as empty, not as an error: as on Drive.

Faults come from the base's script; `rate_limit_next` scripts Google's rate-limit answers.

    with FakeDrive() as drive:
        drive.add_file("trip/IMG_1.jpg", data, time="2019:07:01 12:30:00", location=(48.85, 2.29))
        drive.add_workspace_doc("trip/notes")
        drive.rate_limit_next(403, "userRateLimitExceeded")
        source = GDriveSource(drive.root_id, drive.api_key, api_base=drive.url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from filesync.testing.fakes.base import ASGIApp, FakeService

FOLDER = "application/vnd.google-apps.folder"
WORKSPACE = "application/vnd.google-apps."
MAX_PAGE = 1000
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_STRING = r"'((?:[^'\\]|\\.)*)'"
_CLAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^{_STRING}\s+in\s+parents$"), "parent"),
    (re.compile(r"^trashed\s*=\s*(true|false)$"), "trashed"),
    (re.compile(rf"^name\s*=\s*{_STRING}$"), "name"),
    (re.compile(rf"^name\s+contains\s+{_STRING}$"), "name_contains"),
    (re.compile(rf"^mimeType\s*=\s*{_STRING}$"), "mime"),
    (re.compile(rf"^mimeType\s*!=\s*{_STRING}$"), "not_mime"),
)
_ORDER_KEYS = {"name", "createdTime", "modifiedTime", "folder"}
_DEFAULT_LIST_FIELDS = "kind,nextPageToken,incompleteSearch,files(kind,id,name,mimeType)"
_LIST_FIELDS = {"kind", "nextPageToken", "incompleteSearch", "files"}
_FILE_FIELDS = {"kind", "id", "name", "mimeType", "parents", "trashed", "createdTime", "modifiedTime", "size",
                "md5Checksum", "resourceKey", "imageMediaMetadata", "fileExtension", "webContentLink"}
_FAULTS = {
    400: ("badRequest", "global", "Bad Request"),
    403: ("insufficientFilePermissions", "global", "The user does not have sufficient permissions for this file."),
    404: ("notFound", "global", "File not found."),
    429: ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
    500: ("backendError", "global", "Backend Error"),
    502: ("backendError", "global", "Bad Gateway"),
    503: ("backendError", "global", "Service Unavailable"),
    504: ("backendError", "global", "Gateway Timeout"),
}
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 416: "OUT_OF_RANGE",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def google_error(status: int, reason: str, message: str, *, domain: str = "global",
                 details: list[dict[str, Any]] | None = None, **extra: str) -> dict[str, Any]:
    """Google's JSON error body: `error.errors[0].reason` is what clients classify by."""
    error: dict[str, Any] = {
        "code": status, "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason, **extra}],
    }
    if status in _STATUS_NAMES:
        error["status"] = _STATUS_NAMES[status]
    if details:
        error["details"] = details
    return {"error": error}


def _answer(status: int, reason: str, message: str, **kw: Any) -> JSONResponse:
    return JSONResponse(google_error(status, reason, message, **kw), status_code=status)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class DriveItem:
    """One file or folder of the fake drive."""

    id: str
    name: str
    mime: str
    parent: str | None
    created: datetime
    data: bytes = b""
    trashed: bool = False
    resource_key: str | None = None
    time: str | None = None  # imageMediaMetadata.time, EXIF style
    location: tuple[float, float] | None = None

    @property
    def folder(self) -> bool:
        return self.mime == FOLDER

    @property
    def workspace(self) -> bool:
        return self.mime.startswith(WORKSPACE)

    def resource(self) -> dict[str, Any]:
        """Every field Drive would return for this item with `fields=*`."""
        out: dict[str, Any] = {
            "kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime,
            "parents": [self.parent] if self.parent else [], "trashed": self.trashed,
            "createdTime": _rfc3339(self.created), "modifiedTime": _rfc3339(self.created + timedelta(minutes=1)),
        }
        if self.resource_key:
            out["resourceKey"] = self.resource_key
        if not self.workspace:
            out["size"] = str(len(self.data))  # int64 travels as a string
            out["md5Checksum"] = hashlib.md5(self.data).hexdigest()
            if "." in self.name:
                out["fileExtension"] = self.name.rsplit(".", 1)[1]
        image: dict[str, Any] = {}
        if self.time is not None:
            image["time"] = self.time
        if self.location is not None:
            image["location"] = {"latitude": self.location[0], "longitude": self.location[1], "altitude": 35.0}
        if image or self.mime.startswith("image/"):
            out["imageMediaMetadata"] = {"width": 640, "height": 480, **image}
        return out


class FieldMaskError(ValueError):
    pass


def parse_fields(text: str) -> dict[str, Any] | None:
    """`nextPageToken, files(id, imageMediaMetadata(time))` or `files/id` as a tree; None for `*`."""
    text = text.strip()
    if not text or text == "*":
        return None
    pos = 0

    def parse_list(end: str | None) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(text):
            match = re.match(r"\s*([A-Za-z*][A-Za-z0-9_/*]*)\s*", text[pos:])
            if not match:
                raise FieldMaskError(f"Invalid field selection {text[pos:]}")
            pos += match.end()
            node = out
            parts = match.group(1).split("/")
            for part in parts[:-1]:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            leaf = parts[-1]
            if pos < len(text) and text[pos] == "(":
                pos += 1
                node[leaf] = parse_list(")")
            else:
                node.setdefault(leaf, None)
            rest = re.match(r"\s*", text[pos:])
            pos += rest.end() if rest else 0
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if end is not None and pos < len(text) and text[pos] == end:
                pos += 1
                return out
            if pos >= len(text):
                break
            raise FieldMaskError(f"Invalid field selection {text}")
        if end is not None:
            raise FieldMaskError(f"Invalid field selection {text}: unbalanced parentheses")
        return out

    return parse_list(None)


def apply_fields(mask: dict[str, Any] | None, value: Any) -> Any:
    if mask is None or "*" in mask:
        return value
    if isinstance(value, list):
        return [apply_fields(mask, v) for v in value]
    if isinstance(value, dict):
        return {k: apply_fields(sub, value[k]) for k, sub in mask.items() if k in value}
    return value


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def _split_and(q: str) -> list[str]:
    """Clauses joined by `and`, outside string literals."""
    clauses, current, quoted, i = [], "", False, 0
    while i < len(q):
        ch = q[i]
        if quoted and ch == "\\" and i + 1 < len(q):
            current += q[i:i + 2]
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        if not quoted and re.match(r"\s+and\s+", q[i:], re.IGNORECASE) and current.strip():
            match = re.match(r"\s+and\s+", q[i:], re.IGNORECASE)
            assert match is not None
            clauses.append(current.strip())
            current = ""
            i += match.end()
            continue
        current += ch
        i += 1
    if quoted:
        raise ValueError("unterminated string")
    if current.strip():
        clauses.append(current.strip())
    return clauses


class FakeDrive(FakeService):
    """A drive holding one shared folder (`root_id`); paths given to `add_*` are below it."""

    name = "gdrive"
    supports_faults = True

    def __init__(self, api_key: str = "AIzaFakeDriveKey-0123456789abcdefghijk", *, root_resource_key: str | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.api_key = api_key
        self._rng = random.Random(seed)
        self._pages = random.Random(seed + 1)
        self._data_lock = threading.RLock()
        self._items: dict[str, DriveItem] = {}
        self._clock = datetime(2020, 1, 1, tzinfo=UTC)
        self.short_pages = False
        self.root_id = self._new_id()
        self._items[self.root_id] = DriveItem(self.root_id, "Shared photos", FOLDER, None, self._tick(),
                                              resource_key=root_resource_key)

    # --- seeding ------------------------------------------------------------------------------
    def _new_id(self) -> str:
        while True:
            new = "1" + "".join(self._rng.choice(_ID_CHARS) for _ in range(32))
            if new not in self._items:
                return new

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)  # every item is created after the previous one: createdTime orders
        return self._clock

    def _folder_of(self, parts: list[str]) -> str:
        parent = self.root_id
        for part in parts:
            found = [i for i in self._items.values()
                     if i.parent == parent and i.name == part and i.folder and not i.trashed]
            if found:
                parent = found[0].id
            else:
                item = DriveItem(self._new_id(), part, FOLDER, parent, self._tick())
                self._items[item.id] = item
                parent = item.id
        return parent

    def add_folder(self, path: str, *, resource_key: str | None = None) -> str:
        """Creates the folders of `path` that are missing; returns the last one's id."""
        with self._data_lock:
            parts = [p for p in path.split("/") if p]
            parent = self._folder_of(parts[:-1])
            item = DriveItem(self._new_id(), parts[-1], FOLDER, parent, self._tick(), resource_key=resource_key)
            self._items[item.id] = item
            return item.id

    def add_file(self, path: str, data: bytes = b"", *, mime: str | None = None, time: str | None = None,
                 location: tuple[float, float] | None = None, trashed: bool = False,
                 resource_key: str | None = None, name: str | None = None) -> str:
        """A new file (a second one with the same path is a duplicate name, as Drive allows); `name`
        overrides the last segment, for names with "/" in them. Returns its id."""
        with self._data_lock:
            parts = path.split("/")
            parent = self._folder_of([p for p in parts[:-1] if p])
            leaf = name if name is not None else parts[-1]
            mime = mime or mimetypes.guess_type(leaf)[0] or "application/octet-stream"
            item = DriveItem(self._new_id(), leaf, mime, parent, self._tick(), data=data, trashed=trashed,
                             resource_key=resource_key, time=time, location=location)
            self._items[item.id] = item
            return item.id

    def add_workspace_doc(self, path: str, kind: str = "document") -> str:
        """A Google Docs/Sheets/... file (`kind`: document, spreadsheet, presentation, form, shortcut...)."""
        return self.add_file(path, mime=f"{WORKSPACE}{kind}")

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """SourceStore for the conformance suite: keys are paths below the shared folder."""
        self.add_file(key, data, mime=content_type)

    def trash(self, item_id: str) -> None:
        with self._data_lock:
            self._items[item_id].trashed = True

    def delete(self, item_id: str) -> None:
        with self._data_lock:
            del self._items[item_id]

    def item(self, item_id: str) -> DriveItem:
        with self._data_lock:
            return self._items[item_id]

    def items(self) -> list[DriveItem]:
        with self._data_lock:
            return list(self._items.values())

    # --- faults and introspection -------------------------------------------------------------
    def rate_limit_next(self, status: int = 403, reason: str = "userRateLimitExceeded", *, times: int = 1,
                        retry_after: str | None = None, path_contains: str | None = None) -> None:
        """Drive's rate-limit answers: 403 with a usageLimits reason, or 429."""
        message = "User Rate Limit Exceeded" if reason == "userRateLimitExceeded" else "Rate Limit Exceeded"
        body = json.dumps(google_error(status, reason, message, domain="usageLimits")).encode()
        self.fail_next(status, body=body, times=times, path_contains=path_contains,
                       headers={"Retry-After": retry_after} if retry_after else None)

    def fault_body(self, status: int) -> bytes:
        reason, domain, message = _FAULTS.get(status, ("backendError", "global", f"injected HTTP {status}"))
        return json.dumps(google_error(status, reason, message, domain=domain)).encode()

    def list_calls(self) -> int:
        """files.list requests received (page fetches and path look-ups)."""
        return len(self.requests_to("GET", "/drive/v3/files")) - len(self.file_requests())

    def file_requests(self) -> list[Any]:
        return [r for r in self.requests_to("GET", "/drive/v3/files/")]

    def downloads(self) -> list[Any]:
        return [r for r in self.file_requests() if "alt=media" in r.query]

    # --- the API ------------------------------------------------------------------------------
    def _visible(self, item: DriveItem, keys: dict[str, str]) -> bool:
        return item.resource_key is None or keys.get(item.id) == item.resource_key

    @staticmethod
    def _resource_keys(request: Request) -> dict[str, str]:
        keys: dict[str, str] = {}
        for pair in request.headers.get("x-goog-drive-resource-keys", "").split(","):
            if "/" in pair:
                item_id, key = pair.strip().split("/", 1)
                keys[item_id] = key
        return keys

    def _refuse_key(self, request: Request) -> JSONResponse | None:
        key = request.query_params.get("key") or request.headers.get("x-goog-api-key")
        if not key:
            return _answer(403, "forbidden", "Method doesn't allow unregistered callers (callers without "
                           "established identity). Please use API Key or other form of API consumer identity "
                           "to call this API.")
        if key != self.api_key:
            return _answer(400, "badRequest", "API key not valid. Please pass a valid API key.", details=[{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "drive.googleapis.com"}}])
        return None

    def _matcher(self, q: str) -> Callable[[DriveItem], bool]:
        tests: list[Callable[[DriveItem], bool]] = []
        for clause in _split_and(q):
            for pattern, kind in _CLAUSES:
                match = pattern.match(clause)
                if match:
                    value = match.group(1)
                    tests.append(_clause(kind, value if kind == "trashed" else _unescape(value)))
                    break
            else:
                raise ValueError(clause)
        return lambda item: all(test(item) for test in tests)

    @staticmethod
    def _order(order_by: str) -> Callable[[DriveItem], Any]:
        keys: list[tuple[str, bool]] = []
        for part in [p.strip() for p in order_by.split(",") if p.strip()]:
            field, _, direction = part.partition(" ")
            if field not in _ORDER_KEYS or direction.strip() not in ("", "desc"):
                raise ValueError(part)
            keys.append((field, direction.strip() == "desc"))

        def sort_key(item: DriveItem) -> Any:
            values: list[Any] = []
            for field, desc in keys:
                value: Any = {"name": item.name.lower(), "createdTime": item.created.timestamp(),
                              "modifiedTime": item.created.timestamp(), "folder": 0 if item.folder else 1}[field]
                if desc:
                    value = -value if isinstance(value, float | int) else _Reversed(value)
                values.append(value)
            values.append(item.id)  # without orderBy Drive promises no order: ids look random
            return tuple(values)

        return sort_key

    def _list(self, request: Request) -> Response:
        params = request.query_params
        try:
            page_size = int(params.get("pageSize", "100"))
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= MAX_PAGE:
            return _answer(400, "invalid", f"Invalid value '{params.get('pageSize')}'. Values must be within "
                           f"the range: [1, {MAX_PAGE}]", location="pageSize", locationType="parameter")
        q = params.get("q", "")
        try:
            matches = self._matcher(q) if q else (lambda item: True)
        except ValueError:
            return _answer(400, "invalid", "Invalid Value", location="q", locationType="parameter")
        try:
            sort_key = self._order(params.get("orderBy", ""))
        except ValueError:
            return _answer(400, "invalid", "Invalid Value", location="orderBy", locationType="parameter")
        try:
            mask = parse_fields(params.get("fields", _DEFAULT_LIST_FIELDS))
        except FieldMaskError as exc:
            return _answer(400, "invalidParameter", str(exc), location="fields", locationType="parameter")
        if mask is not None and not set(mask) <= _LIST_FIELDS | {"*"}:
            return _answer(400, "invalidParameter", f"Invalid field selection {sorted(set(mask) - _LIST_FIELDS)[0]}",
                           location="fields", locationType="parameter")
        signature = hashlib.sha256(f"{q}|{params.get('orderBy', '')}".encode()).hexdigest()[:16]
        offset = 0
        if params.get("pageToken"):
            try:
                sig, raw = base64.urlsafe_b64decode(params["pageToken"].encode()).decode().split(":")
                offset = int(raw)
                if sig != signature:
                    raise ValueError("token of another query")
            except (ValueError, UnicodeDecodeError):
                return _answer(400, "invalid", "Invalid Value", location="pageToken", locationType="parameter")
        keys = self._resource_keys(request)
        with self._data_lock:
            visible_folders = {i.id for i in self._items.values() if i.folder and self._visible(i, keys)}
            found = [i for i in self._items.values() if i.parent in visible_folders and matches(i)]
            found.sort(key=sort_key)
            if self.short_pages:
                take = self._pages.randint(0, page_size - 1) if page_size > 1 else self._pages.randint(0, 1)
            else:
                take = page_size
            page = found[offset:offset + take]
            body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False,
                                    "files": [i.resource() for i in page]}
        if offset + take < len(found):
            body["nextPageToken"] = base64.urlsafe_b64encode(f"{signature}:{offset + take}".encode()).decode()
        return JSONResponse(apply_fields(mask, body))

    def _get(self, file_id: str, request: Request) -> Response:
        keys = self._resource_keys(request)
        with self._data_lock:
            item = self._items.get(file_id)
            visible = item is not None and self._visible(item, keys)
        if item is None or not visible:
            return _answer(404, "notFound", f"File not found: {file_id}.", location="fileId",
                           locationType="parameter")
        if request.query_params.get("alt") == "media":
            return self._media(item, request)
        try:
            mask = parse_fields(request.query_params.get("fields", "kind,id,name,mimeType"))
        except FieldMaskError as exc:
            return _answer(400, "invalidParameter", str(exc), location="fields", locationType="parameter")
        if mask is not None and not set(mask) <= _FILE_FIELDS | {"*"}:
            return _answer(400, "invalidParameter", "Invalid field selection", location="fields",
                           locationType="parameter")
        return JSONResponse(apply_fields(mask, item.resource()))

    def _media(self, item: DriveItem, request: Request) -> Response:
        if item.workspace:
            return _answer(403, "fileNotDownloadable", "Only files with binary content can be downloaded. Use "
                           "Export with Docs Editors files.", location="alt", locationType="parameter")
        data, size = item.data, len(item.data)
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{hashlib.md5(data).hexdigest()}"'}
        wanted = request.headers.get("range")
        if not wanted:
            return Response(data, media_type=item.mime, headers=headers)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        if not match or int(match.group(1)) >= size:
            return Response(json.dumps(google_error(416, "requestedRangeNotSatisfiable",
                                                    "Request range not satisfiable")),
                            status_code=416, media_type="application/json",
                            headers={"Content-Range": f"bytes */{size}"})
        start = int(match.group(1))
        end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(data[start:end + 1], status_code=206, media_type=item.mime, headers=headers)

    def build_app(self) -> ASGIApp:
        app = FastAPI()

        @app.get("/drive/v3/files")
        async def files_list(request: Request) -> Response:
            return self._refuse_key(request) or self._list(request)

        @app.get("/drive/v3/files/{file_id}")
        async def files_get(file_id: str, request: Request) -> Response:
            return self._refuse_key(request) or self._get(file_id, request)

        return app


class _Reversed:
    """Sorts a string descending inside a tuple key."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(self.value > other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


def _clause(kind: str, value: str) -> Callable[[DriveItem], bool]:
    if kind == "parent":
        return lambda item: item.parent == value
    if kind == "trashed":
        wanted = value == "true"
        return lambda item: item.trashed == wanted
    if kind == "name":
        return lambda item: item.name == value
    if kind == "name_contains":
        return lambda item: value.lower() in item.name.lower()
    if kind == "mime":
        return lambda item: item.mime == value
    return lambda item: item.mime != value
