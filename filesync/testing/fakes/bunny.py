"""A local stand-in for Bunny Edge Storage's HTTP API, as documented and as the official SDKs call it.

`PUT /{zone}/{path}` stores the raw body (streamed to disk, never whole in memory) and checks an
optional `Checksum` header (uppercase hex SHA-256) against it; `GET` downloads a file or, with a
trailing slash, lists one directory level as JSON; `DESCRIBE` returns one listing entry; `DELETE`
removes a file or a directory tree. Every request needs the zone's password in `AccessKey`: an
unknown zone or a wrong key answers 401, which is what the docs list for both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from filesync.testing.fakes.base import ASGIApp, FakeService
from filesync.testing.sink_conformance import StoredObject

ZONE = "filesync-zone"
ACCESS_KEY = "fake-bunny-storage-password-0000"
SERVER_ID = 42


@dataclass
class _Entry:
    """What the fake knows of one stored file besides its bytes."""

    guid: str
    length: int
    checksum: str  # uppercase hex SHA-256, as Bunny lists it
    content_type: str
    created: datetime
    changed: datetime
    puts: int = 1
    replicated: list[str] = field(default_factory=list)


def _stamp(when: datetime) -> str:
    """Bunny's timestamps: no timezone, milliseconds."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def _message(status: int, message: str) -> JSONResponse:
    return JSONResponse({"HttpCode": status, "Message": message}, status_code=status)


class FakeBunny(FakeService):
    """One or more storage zones held in a temporary folder."""

    name = "bunny"
    can_corrupt = True

    def __init__(self, zones: dict[str, str] | None = None) -> None:
        super().__init__()
        self.zones = dict(zones or {ZONE: ACCESS_KEY})
        self.zone = next(iter(self.zones))
        self.access_key = self.zones[self.zone]
        self.root = Path(tempfile.mkdtemp(prefix="fake-bunny-"))
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._state = threading.Lock()
        self._corrupt = 0

    # --- FakeStore ---------------------------------------------------------------------------------
    def stored(self) -> list[StoredObject]:
        with self._state:
            items = sorted(self._entries.items())
        return [
            StoredObject(key=path, size=e.length, sha256=e.checksum.lower(),
                         content_type=e.content_type or None)
            for (_zone, path), e in items
        ]

    def corrupt_next(self) -> None:
        with self._state:
            self._corrupt += 1

    def read(self, path: str, zone: str | None = None) -> bytes:
        """The stored bytes of one file, for assertions."""
        return self._file(zone or self.zone, path).read_bytes()

    def entry(self, path: str, zone: str | None = None) -> _Entry | None:
        with self._state:
            return self._entries.get((zone or self.zone, path))

    def fault_body(self, status: int) -> bytes:
        return json.dumps({"HttpCode": status, "Message": f"injected {status}"}).encode()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- storage -----------------------------------------------------------------------------------
    def _file(self, zone: str, path: str) -> Path:
        return self.root / zone / path

    def _take_corruption(self) -> bool:
        with self._state:
            if self._corrupt:
                self._corrupt -= 1
                return True
            return False

    def _listing_entry(self, zone: str, path: str, entry: _Entry | None) -> dict[str, Any]:
        """One object as Bunny's listing and DESCRIBE show it; `entry` None means a directory."""
        parent, _, name = path.rstrip("/").rpartition("/")
        now = datetime.now(UTC).replace(tzinfo=None)
        return {
            "Guid": entry.guid if entry else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{zone}/{path}")),
            "StorageZoneName": zone,
            "Path": f"/{zone}/{parent}/" if parent else f"/{zone}/",
            "ObjectName": name,
            "Length": entry.length if entry else 0,
            "LastChanged": _stamp(entry.changed if entry else now),
            "ServerId": SERVER_ID,
            "ArrayNumber": 0,
            "IsDirectory": entry is None,
            "UserId": "00000000-0000-0000-0000-000000000000",
            "ContentType": entry.content_type if entry else "",
            "DateCreated": _stamp(entry.created if entry else now),
            "StorageZoneId": 1000 + sorted(self.zones).index(zone),
            "Checksum": entry.checksum if entry else None,
            "ReplicatedZones": ",".join(entry.replicated) if entry else None,
        }

    # --- the app ----------------------------------------------------------------------------------
    def build_app(self) -> ASGIApp:
        app = FastAPI()
        methods = ["GET", "PUT", "DELETE", "DESCRIBE"]

        @app.api_route("/{zone}", methods=methods)
        async def zone_root(zone: str, request: Request) -> Response:
            return await self._handle(zone, "", request)

        @app.api_route("/{zone}/{path:path}", methods=methods)
        async def zone_path(zone: str, path: str, request: Request) -> Response:
            return await self._handle(zone, path, request)

        return app

    async def _handle(self, zone: str, path: str, request: Request) -> Response:
        if zone not in self.zones or request.headers.get("accesskey") != self.zones[zone]:
            return _message(401, "Unauthorized")
        is_dir = path == "" or path.endswith("/")
        clean = path.rstrip("/")
        parts = clean.split("/") if clean else []
        if any(p in ("", ".", "..") for p in parts) or "\x00" in path:
            return _message(400, "Invalid path")
        method = request.method
        if method == "PUT":
            if is_dir:
                return _message(400, "Upload requires a file name")
            return await self._put(zone, clean, request)
        if method == "GET":
            return self._list(zone, clean) if is_dir else self._get(zone, clean)
        if method == "DESCRIBE":
            with self._state:
                entry = self._entries.get((zone, clean))
            if entry is None:
                return _message(404, "Object Not Found")
            return JSONResponse(self._listing_entry(zone, clean, entry))
        return self._delete(zone, clean, is_dir)

    async def _put(self, zone: str, path: str, request: Request) -> Response:
        target = self._file(zone, path)
        if target.is_dir():
            return _message(400, "A directory exists at this path")
        target.parent.mkdir(parents=True, exist_ok=True)
        corrupt = self._take_corruption()
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    if corrupt and size == 0:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            declared = request.headers.get("content-length")
            if declared is not None and int(declared) != size:
                raise OSError("short body")
            expected = request.headers.get("checksum")
            actual = digest.hexdigest().upper()
            if expected is not None and expected != actual:
                Path(tmp).unlink(missing_ok=True)
                return _message(400, "Invalid checksum: the content does not match the Checksum header")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        now = datetime.now(UTC).replace(tzinfo=None)
        content_type = request.headers.get("override-content-type") or ""
        with self._state:
            old = self._entries.get((zone, path))
            self._entries[(zone, path)] = _Entry(
                guid=old.guid if old else str(uuid.uuid4()), length=size, checksum=actual,
                content_type=content_type, created=old.created if old else now, changed=now,
                puts=(old.puts + 1) if old else 1,
            )
        return _message(201, "File uploaded.")

    def _get(self, zone: str, path: str) -> Response:
        with self._state:
            entry = self._entries.get((zone, path))
        if entry is None:
            return _message(404, "Object Not Found")
        media_type = entry.content_type or "application/octet-stream"
        return FileResponse(self._file(zone, path), media_type=media_type)

    def _list(self, zone: str, directory: str) -> Response:
        prefix = f"{directory}/" if directory else ""
        files: list[dict[str, Any]] = []
        dirs: set[str] = set()
        with self._state:
            items = [(p, e) for (z, p), e in self._entries.items() if z == zone and p.startswith(prefix)]
        for path, entry in sorted(items):
            rest = path[len(prefix):]
            if "/" in rest:
                dirs.add(prefix + rest.split("/", 1)[0])
            else:
                files.append(self._listing_entry(zone, path, entry))
        listing = [self._listing_entry(zone, d, None) for d in sorted(dirs)] + files
        return JSONResponse(listing)

    def _delete(self, zone: str, path: str, is_dir: bool) -> Response:
        with self._state:
            if is_dir:
                prefix = f"{path}/" if path else ""
                doomed = [k for k in self._entries if k[0] == zone and k[1].startswith(prefix)]
            else:
                doomed = [(zone, path)] if (zone, path) in self._entries else []
            if not doomed:
                return _message(404, "Object Not Found")
            for key in doomed:
                del self._entries[key]
        for _zone, doomed_path in doomed:
            self._file(zone, doomed_path).unlink(missing_ok=True)
        return _message(200, "File deleted successfuly.")
