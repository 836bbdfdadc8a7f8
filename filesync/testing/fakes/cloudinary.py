"""A local stand-in for Cloudinary's Upload and Admin APIs, as the official Python SDK calls them.

Point the SDK at it with `upload_prefix=fake.url`. What it checks, like the service:
- `POST /v1_1/{cloud}/{image|video|raw}/upload`: multipart form, `api_key`, `timestamp` (not older than
  an hour) and a signature recomputed from the form (SHA-1, or SHA-256 when 64 hex digits, of the
  sorted `k=v` pairs joined by `&`, with `&` inside a pair encoded as `%26`, followed by the secret);
  `public_id`, `overwrite` (an existing asset with `overwrite=0` is answered at once with
  `"existing": true`), `context` (`k=v|k2=v2`, `\\=` and `\\|` escaped).
- Chunked uploads: every part carries `X-Unique-Upload-Id` and `Content-Range: bytes a-b/total`;
  parts other than the last must be at least 5 MiB; the last one assembles the asset.
- `GET /v1_1/{cloud}/ping` and `GET /v1_1/{cloud}/resources/{type}/upload/{public_id}` with Basic auth.
Errors are `{"error": {"message": ...}}` with the service's status codes. Bytes go to disk, never
whole into memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from filesync.testing.fakes.base import ASGIApp, FakeService
from filesync.testing.sink_conformance import StoredObject

CLOUD = "filesync-cloud"
API_KEY = "123456789012345"
API_SECRET = "fake-cloudinary-secret-abcdefghij"
MIN_PART = 5 * 1024 * 1024
RESOURCE_TYPES = ("image", "video", "raw")
UNSIGNED = {"file", "cloud_name", "resource_type", "api_key", "signature"}
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
COPY = 1024 * 1024


def string_to_sign(params: dict[str, str]) -> str:
    """Cloudinary's string to sign (signature version 2), written from the docs, not the SDK."""
    pairs = [f"{k}={v}".replace("&", "%26") for k, v in params.items() if v and k not in UNSIGNED]
    return "&".join(sorted(pairs))


def sign(params: dict[str, str], secret: str, algorithm: str = "sha1") -> str:
    return hashlib.new(algorithm, (string_to_sign(params) + secret).encode()).hexdigest()


def parse_context(raw: str) -> dict[str, str]:
    """`k=v|k2=v2` with `\\=` and `\\|` escaped inside values."""
    result: dict[str, str] = {}
    for pair in re.split(r"(?<!\\)\|", raw):
        if not pair:
            continue
        key, value = ([*re.split(r"(?<!\\)=", pair, maxsplit=1), ""])[:2]
        result[key.replace("\\=", "=").replace("\\|", "|")] = value.replace("\\=", "=").replace("\\|", "|")
    return result


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.lower() in {"1", "true"}


@dataclass
class Asset:
    public_id: str
    resource_type: str
    path: Path
    size: int
    sha256: str
    md5: str
    version: int
    format: str | None
    original_filename: str
    context: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    asset_id: str = ""


@dataclass
class _Partial:
    """A chunked upload in progress, keyed by X-Unique-Upload-Id."""

    total: int
    parts: dict[int, tuple[Path, int]] = field(default_factory=dict)


class FakeCloudinary(FakeService):
    """One product environment (cloud) with one API key pair."""

    name = "cloudinary"
    can_corrupt = True

    def __init__(self, cloud: str = CLOUD, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        super().__init__()
        self.cloud = cloud
        self.api_key = api_key
        self.api_secret = api_secret
        self.root = Path(tempfile.mkdtemp(prefix="fake-cloudinary-"))
        self.assets: dict[tuple[str, str], Asset] = {}
        self._partials: dict[str, _Partial] = {}
        self._state = threading.Lock()
        self._corrupt = 0
        self.uploads = 0  # upload requests that stored or replaced an asset

    # --- FakeStore ---------------------------------------------------------------------------------
    @property
    def cloudinary_url(self) -> str:
        return f"cloudinary://{self.api_key}:{self.api_secret}@{self.cloud}?upload_prefix={self.url}"

    def stored(self) -> list[StoredObject]:
        with self._state:
            assets = sorted(self.assets.values(), key=lambda a: (a.public_id, a.resource_type))
        return [StoredObject(key=a.public_id, size=a.size, sha256=a.sha256, metadata=dict(a.context))
                for a in assets]

    def corrupt_next(self) -> None:
        """Flip a byte of the next stored upload: Cloudinary verifies no checksum, so it goes unnoticed."""
        with self._state:
            self._corrupt += 1

    def asset(self, public_id: str, resource_type: str = "image") -> Asset | None:
        with self._state:
            return self.assets.get((resource_type, public_id))

    def read(self, public_id: str, resource_type: str = "image") -> bytes:
        asset = self.asset(public_id, resource_type)
        if asset is None:
            raise KeyError(public_id)
        return asset.path.read_bytes()

    def fault_body(self, status: int) -> bytes:
        return json.dumps({"error": {"message": f"injected {status}"}}).encode()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the app ----------------------------------------------------------------------------------
    def build_app(self) -> ASGIApp:
        app = FastAPI()

        @app.post("/v1_1/{cloud}/{resource_type}/upload")
        async def upload(cloud: str, resource_type: str, request: Request) -> Response:
            return await self._upload(cloud, resource_type, request)

        @app.get("/v1_1/{cloud}/ping")
        async def ping(cloud: str, request: Request) -> Response:
            refused = self._basic_auth(cloud, request)
            return refused or JSONResponse({"status": "ok"})

        @app.get("/v1_1/{cloud}/resources/{resource_type}/upload/{public_id:path}")
        async def resource(cloud: str, resource_type: str, public_id: str, request: Request) -> Response:
            refused = self._basic_auth(cloud, request)
            if refused:
                return refused
            asset = self.asset(public_id, resource_type)
            if asset is None:
                return _error(404, f"Resource not found - {public_id}")
            return JSONResponse(self._describe(asset))

        return app

    def _basic_auth(self, cloud: str, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if cloud != self.cloud:
            return _error(401, "Invalid cloud_name " + cloud)
        if not header.lower().startswith("basic "):
            return _error(401, "Missing authentication")
        try:
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return _error(401, "Invalid authentication")
        if key != self.api_key:
            return _error(401, f"Unknown API key {key}")
        if secret != self.api_secret:
            return _error(401, "Invalid API secret")
        return None

    def _check_signature(self, cloud: str, params: dict[str, str]) -> Response | None:
        if cloud != self.cloud:
            return _error(401, "Invalid cloud_name " + cloud)
        if params.get("api_key") != self.api_key:
            return _error(401, f"Unknown API key {params.get('api_key', '')}")
        timestamp = params.get("timestamp", "")
        if not timestamp.isdigit():
            return _error(400, "Missing required parameter - timestamp")
        if abs(time.time() - int(timestamp)) > 3600:
            return _error(400, f"Stale request - reported time is {timestamp} which is more than 1 hour ago")
        given = params.get("signature", "")
        algorithm = "sha256" if len(given) == 64 else "sha1"
        if not secrets.compare_digest(given, sign(params, self.api_secret, algorithm)):
            return _error(401, f"Invalid Signature {given}. String to sign - '{string_to_sign(params)}'.")
        return None

    async def _upload(self, cloud: str, resource_type: str, request: Request) -> Response:
        if resource_type not in RESOURCE_TYPES:
            return _error(400, f"Invalid resource type {resource_type}")
        async with request.form(max_files=1, max_fields=200) as form:
            params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            upload = form.get("file")
            refused = self._check_signature(cloud, params)
            if refused:
                return refused
            if not isinstance(upload, UploadFile):
                return _error(400, "Missing required parameter - file")
            part, digest, md5, size = await self._save(upload)
        filename = upload.filename or "file"
        if size == 0:
            part.unlink(missing_ok=True)
            return _error(400, "Empty file")
        content_range = request.headers.get("content-range")
        if content_range:
            upload_id = request.headers.get("x-unique-upload-id", "")
            outcome = self._add_part(upload_id, content_range, part, size, params.get("public_id"))
            if isinstance(outcome, Response):
                return outcome
            part, digest, md5, size = outcome
        return self._finish(resource_type, params, filename, part, digest, md5, size)

    async def _save(self, upload: UploadFile) -> tuple[Path, str, str, int]:
        """Copy the form's file to our own temp file, hashing it on the way."""
        corrupt = self._take_corruption()
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        handle = tempfile.NamedTemporaryFile(dir=self.root, prefix=".part-", delete=False)
        with handle:
            while chunk := await upload.read(COPY):
                if corrupt and size == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                handle.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                size += len(chunk)
        return Path(handle.name), sha.hexdigest(), md5.hexdigest(), size

    def _take_corruption(self) -> bool:
        with self._state:
            if self._corrupt:
                self._corrupt -= 1
                return True
            return False

    def _add_part(self, upload_id: str, content_range: str, part: Path, size: int,
                  public_id: str | None) -> Response | tuple[Path, str, str, int]:
        match = _RANGE.match(content_range.strip())
        if not upload_id or not match:
            part.unlink(missing_ok=True)
            return _error(400, "Invalid Content-Range or missing X-Unique-Upload-Id")
        start, end, total = (int(g) for g in match.groups())
        if end - start + 1 != size or end >= total:
            part.unlink(missing_ok=True)
            return _error(400, f"Content-Range {content_range} does not match the part of {size} bytes")
        last = end + 1 == total
        if not last and size < MIN_PART:
            part.unlink(missing_ok=True)
            return _error(400, "All parts except EOF-chunk must be larger than 5mb")
        with self._state:
            partial = self._partials.setdefault(upload_id, _Partial(total=total))
            if partial.total != total:
                part.unlink(missing_ok=True)
                return _error(400, "Content-Range total differs from earlier parts")
            partial.parts[start] = (part, size)
            if not last:
                received = sum(s for _, s in partial.parts.values())
                return JSONResponse({"done": False, "bytes": received, "public_id": public_id,
                                     "upload_id": upload_id})
            del self._partials[upload_id]
        return self._assemble(partial)

    def _assemble(self, partial: _Partial) -> Response | tuple[Path, str, str, int]:
        offset = 0
        for start in sorted(partial.parts):
            if start != offset:
                break
            offset += partial.parts[start][1]
        if offset != partial.total:
            for path, _ in partial.parts.values():
                path.unlink(missing_ok=True)
            return _error(400, "Upload incomplete: parts are missing")
        sha, md5 = hashlib.sha256(), hashlib.md5()
        handle = tempfile.NamedTemporaryFile(dir=self.root, prefix=".whole-", delete=False)
        with handle:
            for start in sorted(partial.parts):
                path, _ = partial.parts[start]
                with path.open("rb") as src:
                    while chunk := src.read(COPY):
                        handle.write(chunk)
                        sha.update(chunk)
                        md5.update(chunk)
                path.unlink()
        return Path(handle.name), sha.hexdigest(), md5.hexdigest(), partial.total

    def _finish(self, resource_type: str, params: dict[str, str], filename: str, part: Path, digest: str,
                md5: str, size: int) -> Response:
        public_id = params.get("public_id") or secrets.token_hex(10)
        folder = params.get("folder")
        if folder and params.get("public_id"):
            public_id = f"{folder.strip('/')}/{public_id}"
        overwrite = _truthy(params.get("overwrite"), default=True)
        key = (resource_type, public_id)
        with self._state:
            existing = self.assets.get(key)
            if existing is not None and not overwrite:
                part.unlink(missing_ok=True)
                return JSONResponse({**self._describe(existing), "existing": True})
            stored = self.root / resource_type / f"{secrets.token_hex(8)}.bin"
            stored.parent.mkdir(parents=True, exist_ok=True)
            part.replace(stored)
            if existing is not None:
                existing.path.unlink(missing_ok=True)
            suffix = PurePosixPath(filename).suffix.lower().lstrip(".")
            asset = Asset(
                public_id=public_id, resource_type=resource_type, path=stored, size=size, sha256=digest,
                md5=md5, version=int(time.time()) + len(self.assets),
                format=None if resource_type == "raw" else suffix,
                original_filename=PurePosixPath(filename).stem,
                context=parse_context(params.get("context", "")),
                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), asset_id=secrets.token_hex(16),
            )
            self.assets[key] = asset
            self.uploads += 1
            body = self._describe(asset)
        if existing is not None:
            body["overwritten"] = True
        return JSONResponse(body)

    def _describe(self, asset: Asset) -> dict[str, Any]:
        """The asset as the Upload API's response and the Admin API's resource call show it."""
        tail = f"{asset.public_id}.{asset.format}" if asset.format else asset.public_id
        path = f"res.cloudinary.com/{self.cloud}/{asset.resource_type}/upload/v{asset.version}/{tail}"
        body: dict[str, Any] = {
            "asset_id": asset.asset_id,
            "public_id": asset.public_id,
            "version": asset.version,
            "version_id": hashlib.md5(f"{asset.public_id}{asset.version}".encode()).hexdigest(),
            "signature": sign({"public_id": asset.public_id, "version": str(asset.version)}, self.api_secret),
            "resource_type": asset.resource_type,
            "created_at": asset.created_at,
            "tags": [],
            "bytes": asset.size,
            "type": "upload",
            "etag": asset.md5,
            "placeholder": False,
            "url": f"http://{path}",
            "secure_url": f"https://{path}",
            "original_filename": asset.original_filename,
        }
        if asset.format:
            body["format"] = asset.format
        if asset.context:
            body["context"] = {"custom": dict(asset.context)}
        return body
