"""A local stand-in for api.cloudflare.com: Cloudflare Images and Cloudflare Stream (tus) in one server.

One base URL (`fake.url + "/client/v4"`) serves both, as the real API does. Bodies land in a temporary
folder, never whole in memory. Stream uploads go through a real tus 1.0.0 server (tuspyserver) with
Stream's chunk rules enforced in front of it. Requests need `Authorization: Bearer <token>` and the
fake's account id; otherwise the answer is Cloudflare's "Authentication error" envelope.

    with FakeCloudflare() as fake:
        images_store, stream_store = fake.images, fake.stream   # one FakeStore per sink
        fake.fail_next(429, headers={"Retry-After": "1"})

Misbehaviour after the fact, where `fail_next` faults before the request is handled: `misanswer_next`
handles the next matching request for real, then answers it wrongly (`success: false`, a truncated
body, a dropped connection, a result naming another object, a tus offset past or short of the truth).
`hold_pending` keeps every video in `pendingupload` whatever it received; `image_limit` and
`stream_storage_full` make the account answer Cloudflare's quota errors.

The Images batch API: `GET .../images/v1/batch_token` issues tokens that expire after `batch_token_ttl`
seconds; a second port (`fake.batch_base`, what CLOUDFLARE_IMAGES_BATCH_BASE points at) serves
`/images/v1...` to those tokens, each limited to `batch_rps` requests in any second (429 past it).
`refuse_batch_tokens` makes the token call fail as on a plan without the batch API. `account_limit`
simulates the account's 1,200 requests per 5 minutes over the /client/v4 calls only (429, then every
account call blocked), scaled down with `AccountLimit.scaled`. `latency` delays every answer, as a
distant API does. One request log serves both ports; `on_batch_host(request)` tells them apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from tuspyserver import create_tus_router

from filesync.testing.fakes.base import (
    ASGIApp,
    FakeService,
    FaultMiddleware,
    LoggedRequest,
    Message,
    Receive,
    Scope,
    Send,
    free_port,
)
from filesync.testing.sink_conformance import StoredObject

MiB = 1024 * 1024
TUS_ALIGN = 256 * 1024
MAX_TUS_CHUNK = 200 * MiB
MAX_IMAGE_ID = 1024
MAX_METADATA = 1024
MAX_CREATOR = 64
#: Upload-Metadata keys Stream reads as settings; every other key lands in `meta`.
STREAM_SETTING_KEYS = frozenset({"requiresignedurls", "scheduleddeletion", "allowedorigins",
                                 "thumbnailtimestamppct", "watermark", "maxdurationseconds", "expiry"})
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/svg+xml", "image/heic",
               "image/avif")

#: Envelope codes for errors raised inside the tus server (Cloudflare publishes no list for Stream).
_HTTP_CODES = {404: 10003, 400: 10005, 409: 10006, 410: 10007, 412: 10008, 413: 10009}
_FAULT_MESSAGES = {
    401: (10000, "Authentication error"),
    429: (971, "Please wait and consider throttling your request speed"),
    413: (5413, "Payload too large"),
    500: (10002, "An internal error occurred"),
    502: (10002, "Bad gateway"),
    503: (10002, "Service unavailable"),
    504: (10002, "Gateway timeout"),
    524: (10002, "A timeout occurred"),
}


def envelope_failure(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def envelope_success(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, "result_info": None}


def failure(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(envelope_failure(code, message), status_code=status, headers=headers)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def sha256_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


#: How `misanswer_next` answers a request it handled for real.
Misanswer = Literal[
    "success_false",  # HTTP 200 {"success": false, "errors": []}
    "truncated",  # the first half of the real body
    "cut",  # the status line and half the body, then the connection drops
    "result",  # the real envelope with `result` updated from the given fields (another id, size, meta)
    "offset_ahead",  # tus: Upload-Offset at the upload's length (past it when already there)
    "offset_stale",  # tus PATCH: Upload-Offset repeats the offset the request started from
]


@dataclass
class WrongAnswer:
    how: Misanswer
    method: str | None = None
    path_contains: str | None = None
    result: dict[str, Any] | None = None
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass(frozen=True)
class AccountLimit:
    """Cloudflare's global API limit: `requests` in any `window` seconds; past it, every account API call
    is answered 429 for `block` seconds ("all API calls for the next five minutes will be blocked")."""

    requests: int = 1200
    window: float = 300.0
    block: float = 300.0

    def scaled(self, factor: float) -> AccountLimit:
        """The same rate over a window (and block) `factor` times shorter, so a test sees it in seconds."""
        return AccountLimit(max(1, round(self.requests / factor)), self.window / factor, self.block / factor)


class _Window:
    """Arrivals in a sliding window: `admit` says how long to wait, or None when one more fits."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return self.times[0] + self.window - now
        self.times.append(now)
        return None


@dataclass
class FakeImage:
    id: str
    filename: str
    path: Path
    size: int
    sha256: str
    content_type: str
    meta: dict[str, Any]
    require_signed_urls: bool
    uploaded: str = field(default_factory=now_iso)


@dataclass
class FakeVideo:
    uid: str
    size: int
    meta: dict[str, str]
    creator: str | None
    created: str = field(default_factory=now_iso)
    ready: bool = False


class _StoreView:
    """One sink's view of the shared server: satisfies FakeStore; anything else goes to the server."""

    supports_faults = True
    can_corrupt = False

    def __init__(self, fake: FakeCloudflare, stored: Callable[[], list[StoredObject]]) -> None:
        self.fake = fake
        self._stored = stored

    def stored(self) -> list[StoredObject]:
        return self._stored()

    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, times: int = 1,
                  **kw: Any) -> None:
        self.fake.fail_next(status, headers=headers, times=times, **kw)

    def corrupt_next(self) -> None:
        """Cloudflare reports no checksum, so the suite never asks this of these sinks."""
        raise NotImplementedError("Cloudflare Images and Stream report no checksum")

    def start(self) -> _StoreView:
        if not self.fake.port:
            self.fake.start()
        return self

    def stop(self) -> None:
        self.fake.stop()

    def __enter__(self) -> _StoreView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)


_PreCreate = Callable[[dict[str, str], dict[str, Any]], None]


class FakeCloudflare(FakeService):
    """Images under /client/v4/accounts/{id}/images/v1, Stream (tus) under /client/v4/accounts/{id}/stream."""

    name = "cloudflare"

    def __init__(self, account_id: str = "0123456789abcdef0123456789abcdef", token: str = "cf-test-token",
                 *, min_chunk: int = 5 * MiB, max_image_bytes: int = 10 * MiB,
                 max_video_bytes: int = 30 * 1000**3, image_limit: int | None = None,
                 batch_token_ttl: float = 600.0, batch_rps: int = 200, account_limit: AccountLimit | None = None,
                 latency: float = 0.0) -> None:
        super().__init__()
        self.batch_token_ttl = batch_token_ttl
        self.batch_rps = batch_rps
        self.account_limit = account_limit
        self.latency = latency  # seconds added before every answer
        self.batch_refused: tuple[int, int, str] | None = None  # (status, code, message) of the token call
        self.batch_tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.batch_tokens_issued = 0
        self.batch_limited = 0  # 429s from the per-token limit
        self.account_limited = 0  # 429s from the account limit
        self._batch_windows: dict[str, _Window] = {}
        self._account_window: _Window | None = None
        self._account_blocked_until = 0.0
        self._limits_lock = threading.Lock()
        self.batch_port = 0
        self._app: ASGIApp | None = None
        self._batch_server: Any = None
        self._batch_thread: threading.Thread | None = None
        self.account_id = account_id
        self.token = token
        self.min_chunk = min_chunk
        self.max_image_bytes = max_image_bytes
        self.max_video_bytes = max_video_bytes
        self.image_limit = image_limit  # images the plan holds; past it, uploads answer 5453
        self.stream_storage_full = False  # tus creation answers 413 code 10011
        self.hold_pending = False  # every video reports `pendingupload`, whatever it received
        self._wrong: list[WrongAnswer] = []
        self.account_hash = hashlib.sha256(account_id.encode()).hexdigest()[:22]
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-cloudflare-")
        self.root = Path(self._tmp.name)
        self.images_dir = self.root / "images"
        self.tus_dir = self.root / "tus"
        self.images_dir.mkdir()
        self.tus_dir.mkdir()
        self._data_lock = threading.Lock()
        self._images: dict[str, FakeImage] = {}
        self._videos: dict[str, FakeVideo] = {}
        self.videos_created = 0
        self.patch_bytes_total = 0
        self.patch_bytes: dict[str, int] = {}
        self.patch_sizes: dict[str, list[int]] = {}
        self._patching: dict[str, int] = {}  # PATCHes in progress per upload
        self.images = _StoreView(self, self.stored_images)
        self.stream = _StoreView(self, self.stored_videos)

    @property
    def api_base(self) -> str:
        return f"{self.url}/client/v4"

    @property
    def batch_base(self) -> str:
        """The Images batch host (CLOUDFLARE_IMAGES_BATCH_BASE): a port of its own, as a host of its own."""
        return f"http://127.0.0.1:{self.batch_port}"

    def on_batch_host(self, request: LoggedRequest) -> bool:
        return request.headers.get("host", "").endswith(f":{self.batch_port}")

    # --- the batch API and the limits ---------------------------------------------------------------
    def refuse_batch_tokens(self, status: int = 403, code: int = 5403,
                            message: str = "The batch API is not available on this account's plan") -> None:
        """The token call fails from now on, as on a plan without the batch API (the real status and code
        of that answer are not documented)."""
        self.batch_refused = (status, code, message)

    def issue_batch_token(self) -> dict[str, str]:
        token = f"batch-{uuid.uuid4().hex}"
        expires = time.time() + self.batch_token_ttl
        with self._limits_lock:
            self.batch_tokens[token] = expires
            self.batch_tokens_issued += 1
        # as Cloudflare writes it: nanoseconds and a Z
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        return {"token": token, "expiresAt": stamp}

    def expire_batch_tokens(self) -> None:
        """Every token issued so far is refused from now on (401), whatever its expiresAt said."""
        with self._limits_lock:
            self.batch_tokens = dict.fromkeys(self.batch_tokens, 0.0)

    def batch_token_problem(self, authorization: str | None) -> str | None:
        """Why the batch host refuses this Authorization header, or None."""
        token = (authorization or "").removeprefix("Bearer ")
        with self._limits_lock:
            expires = self.batch_tokens.get(token)
        if expires is None:
            return "not a batch token"
        return "batch token expired" if time.time() >= expires else None

    def batch_wait(self, authorization: str) -> float | None:
        """Seconds until this token may send again, or None: the request is counted and may go."""
        with self._limits_lock:
            window = self._batch_windows.setdefault(authorization, _Window(self.batch_rps, 1.0))
            wait = window.admit(time.monotonic())
            if wait is not None:
                self.batch_limited += 1
            return wait

    def account_wait(self) -> float | None:
        """Seconds the account stays blocked, or None: the call is counted against `account_limit`."""
        limit = self.account_limit
        if limit is None:
            return None
        with self._limits_lock:
            now = time.monotonic()
            if self._account_window is None or self._account_window.limit != limit.requests:
                self._account_window = _Window(limit.requests, limit.window)
            if now < self._account_blocked_until:
                self.account_limited += 1
                return self._account_blocked_until - now
            if self._account_window.admit(now) is not None:
                self._account_blocked_until = now + limit.block
                self.account_limited += 1
                return limit.block
            return None

    # --- lifecycle: the API port and the batch port ---------------------------------------------------
    def start(self) -> FakeCloudflare:
        super().start()
        import uvicorn

        self.batch_port = free_port()
        config = uvicorn.Config(
            FaultMiddleware(self.build_app(), self), host="127.0.0.1", port=self.batch_port,
            log_level="critical", access_log=False, lifespan="off", timeout_keep_alive=30, http="h11")
        self._batch_server = uvicorn.Server(config)
        self._batch_thread = threading.Thread(target=self._batch_server.run, name="cloudflare-batch-server",
                                              daemon=True)
        self._batch_thread.start()
        deadline = time.monotonic() + 15
        while not self._batch_server.started:
            if time.monotonic() > deadline or not self._batch_thread.is_alive():
                raise RuntimeError("cloudflare batch host did not start")
            time.sleep(0.01)
        return self

    @property
    def base_path(self) -> str:
        return f"/client/v4/accounts/{self.account_id}"

    def fault_body(self, status: int) -> bytes:
        code, message = _FAULT_MESSAGES.get(status, (10000 + status, f"injected HTTP {status}"))
        return json.dumps(envelope_failure(code, message)).encode()

    def misanswer_next(self, how: Misanswer, *, method: str | None = None, path_contains: str | None = None,
                       result: dict[str, Any] | None = None, times: int = 1) -> None:
        """Handle the next matching API request for real (an image is stored, bytes are written), then
        answer it wrongly: what a buggy or lying server, or a proxy that cut the answer, does."""
        if how == "result" and not result:
            raise ValueError("misanswer 'result' needs the fields to put in the answer's result")
        with self._lock:
            self._wrong.append(WrongAnswer(how, method, path_contains, result, times))

    def take_misanswer(self, method: str, path: str) -> WrongAnswer | None:
        with self._lock:
            for wrong in self._wrong:
                if wrong.matches(method, path):
                    wrong.times -= 1
                    if wrong.times <= 0:
                        self._wrong.remove(wrong)
                    return wrong
            return None

    def calm(self) -> None:
        super().calm()
        with self._lock:
            self._wrong.clear()

    def stop(self) -> None:
        if self._batch_server is not None:
            self._batch_server.should_exit = True
        if self._batch_thread is not None:
            self._batch_thread.join(timeout=10)
        super().stop()
        self._tmp.cleanup()

    # --- introspection ------------------------------------------------------------------------
    def image(self, image_id: str) -> FakeImage | None:
        with self._data_lock:
            return self._images.get(image_id)

    def video(self, uid: str) -> FakeVideo | None:
        with self._data_lock:
            return self._videos.get(uid)

    def videos(self, *, include_pending: bool = True) -> list[FakeVideo]:
        with self._data_lock:
            return [v for v in self._videos.values() if include_pending or v.ready]

    def received(self, uid: str) -> int:
        """Bytes the tus server holds for one upload."""
        path = self.tus_dir / uid
        return path.stat().st_size if path.exists() else 0

    def stored_images(self) -> list[StoredObject]:
        with self._data_lock:
            images = list(self._images.values())
        return [StoredObject(key=i.id, size=i.size, sha256=i.sha256,
                             metadata={k: str(v) for k, v in i.meta.items()}, content_type=i.content_type)
                for i in images]

    def stored_videos(self) -> list[StoredObject]:
        """Videos whose bytes have all arrived; `videos()` also lists those still pending upload."""
        out = []
        for video in self.videos(include_pending=False):
            digest, size = sha256_of(self.tus_dir / video.uid)
            out.append(StoredObject(key=video.uid, size=size, sha256=digest, metadata=dict(video.meta)))
        return out

    # --- the app ------------------------------------------------------------------------------
    def build_app(self) -> ASGIApp:
        """One app for both ports (built once): the gate tells the API port from the batch port."""
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def _build_app(self) -> ASGIApp:
        app = FastAPI()
        base = self.base_path

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            code = _HTTP_CODES.get(exc.status_code, 10001)
            return failure(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
            return failure(400, 10005, f"Bad request: {exc.errors()[:1]}")

        self._images_routes(app, base)
        self._stream_routes(app, base)
        app.include_router(self._tus_router(base))
        return _Gate(app, self)

    def _images_routes(self, app: FastAPI, base: str) -> None:
        @app.post(f"{base}/images/v1")
        async def upload_image(request: Request) -> Response:
            form = await request.form(max_part_size=64 * 1024)
            try:
                return await self._store_image(form)
            finally:
                await form.close()

        @app.get(f"{base}/images/v1/batch_token")
        async def batch_token() -> Response:
            if self.batch_refused is not None:
                status, code, message = self.batch_refused
                return failure(status, code, message)
            return JSONResponse(envelope_success(self.issue_batch_token()))

        @app.get(f"{base}/images/v1/stats")
        async def image_stats() -> Response:
            with self._data_lock:
                count = len(self._images)
            allowed = 100000 if self.image_limit is None else self.image_limit
            return JSONResponse(envelope_success({"count": {"current": count, "allowed": allowed}}))

        @app.get(f"{base}/images/v1/{{image_id:path}}")
        async def image_details(image_id: str) -> Response:
            image = self.image(image_id)
            if image is None:
                return failure(404, 5404, "Image not found")
            return JSONResponse(envelope_success(self._image_json(image)))

        @app.delete(f"{base}/images/v1/{{image_id:path}}")
        async def delete_image(image_id: str) -> Response:
            with self._data_lock:
                image = self._images.pop(image_id, None)
            if image is None:
                return failure(404, 5404, "Image not found")
            image.path.unlink(missing_ok=True)
            return JSONResponse(envelope_success({}))

        @app.get("/cdn/{account_hash}/{rest:path}")
        async def deliver(account_hash: str, rest: str) -> Response:
            image_id, _, _variant = rest.rpartition("/")
            image = self.image(image_id)
            if account_hash != self.account_hash or image is None:
                return Response(status_code=404)
            return FileResponse(image.path, media_type=image.content_type)

    async def _store_image(self, form: Any) -> Response:
        upload = form.get("file")
        if form.get("url") is not None and upload is not None:
            return failure(400, 5400, "file and url are mutually exclusive")
        if not isinstance(upload, UploadFile):
            return failure(400, 5400, "No file was uploaded (expected a multipart field named 'file')")
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            return failure(400, 5400, "Uploaded image must have image/jpeg, image/png, image/webp, image/gif "
                                      "or image/svg+xml content-type")
        if (upload.size or 0) > self.max_image_bytes:
            return failure(413, 5413, "Uploaded image exceeds the maximum size of 10 MB")
        raw_meta = form.get("metadata") or "{}"
        if not isinstance(raw_meta, str):
            return failure(400, 5400, "metadata must be a JSON string")
        if len(raw_meta.encode()) > MAX_METADATA:
            return failure(400, 5400, "Metadata must not exceed 1024 bytes")
        try:
            meta = json.loads(raw_meta)
        except ValueError:
            return failure(400, 5400, "metadata is not valid JSON")
        if not isinstance(meta, dict):
            return failure(400, 5400, "metadata must be a JSON object")
        custom_id = form.get("id")
        signed = str(form.get("requireSignedURLs") or "false").lower() == "true"
        if custom_id is not None:
            if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_IMAGE_ID:
                return failure(400, 5400, "Custom ID must be 1 to 1024 characters")
            if signed:
                return failure(400, 5400, "Images with a custom ID cannot require signed URLs")
        image_id = custom_id or str(uuid.uuid4())
        target = self.images_dir / uuid.uuid4().hex
        with self._data_lock:
            if image_id in self._images:
                return failure(409, 5409, "Resource already exists. Verify the resource information and try "
                                          "again.")
            if self.image_limit is not None and len(self._images) >= self.image_limit:
                # the code and message are quoted from public logs; the status is not known (403 here)
                return failure(403, 5453, f"The given account has reached a service limit ({self.image_limit}). "
                                          "Upgrade your plan to increase your service limit.")
            # reserve the id before the copy yields to the event loop
            self._images[image_id] = image = FakeImage(
                id=image_id, filename=upload.filename or "", path=target, size=0, sha256="",
                content_type=content_type, meta=meta, require_signed_urls=signed)
        await asyncio.to_thread(self._copy, upload, image)
        return JSONResponse(envelope_success(self._image_json(image)))

    @staticmethod
    def _copy(upload: UploadFile, image: FakeImage) -> None:
        upload.file.seek(0)
        with image.path.open("wb") as out:
            shutil.copyfileobj(upload.file, out, MiB)
        image.sha256, image.size = sha256_of(image.path)

    def _image_json(self, image: FakeImage) -> dict[str, Any]:
        delivery = f"{self.url}/cdn/{self.account_hash}/{quote(image.id, safe='/')}"
        return {
            "id": image.id,
            "filename": image.filename,
            "uploaded": image.uploaded,
            "requireSignedURLs": image.require_signed_urls,
            "variants": [f"{delivery}/public", f"{delivery}/thumbnail"],
            "meta": image.meta,
        }

    # --- Stream -------------------------------------------------------------------------------
    def _stream_routes(self, app: FastAPI, base: str) -> None:
        @app.head(f"{base}/stream/{{uid}}")
        async def tus_offset(uid: str, request: Request) -> Response:
            # tus HEAD. tuspyserver's own HEAD insists on `filename` and `filetype` metadata, which
            # Stream does not ask for; the offset comes from the same files it keeps.
            if request.headers.get("tus-resumable") != "1.0.0":
                return Response(status_code=412, headers={"Tus-Version": "1.0.0"})
            # like tusd, HEAD takes the upload's lock: a PATCH still being written (say, one whose
            # client just broke off) finishes first, so the offset answered is the one a resume needs
            for _ in range(1000):
                if not self._patching.get(uid):
                    break
                await asyncio.sleep(0.01)
            info = self._tus_info(uid)
            if info is None or self.video(uid) is None:
                return Response(status_code=404, headers={"Tus-Resumable": "1.0.0"})
            return Response(status_code=200, headers={
                "Tus-Resumable": "1.0.0", "Upload-Offset": str(info.get("offset", 0)),
                "Upload-Length": str(info.get("size")), "Cache-Control": "no-store"})

        @app.get(f"{base}/stream")
        async def list_videos(request: Request) -> Response:
            creator = request.query_params.get("creator")
            search = request.query_params.get("search")
            found = [v for v in self.videos()
                     if (creator is None or v.creator == creator)
                     and (search is None or search.lower() in v.meta.get("name", "").lower())]
            return JSONResponse(envelope_success([self._video_json(v) for v in found]))

        @app.get(f"{base}/stream/storage-usage")
        async def storage_usage() -> Response:
            videos = self.videos()
            return JSONResponse(envelope_success(
                {"creator": "", "totalStorageMinutes": 0, "totalStorageMinutesLimit": 1000,
                 "videoCount": len(videos)}))

        @app.get(f"{base}/stream/{{uid}}")
        async def video_details(uid: str) -> Response:
            video = self.video(uid)
            if video is None:
                return failure(404, 10003, "Not Found")
            return JSONResponse(envelope_success(self._video_json(video)))

        @app.delete(f"{base}/stream/{{uid}}")
        async def delete_video(uid: str) -> Response:
            with self._data_lock:
                video = self._videos.pop(uid, None)
            if video is None:
                return failure(404, 10003, "Not Found")
            for path in (self.tus_dir / uid, self.tus_dir / f"{uid}.info"):
                path.unlink(missing_ok=True)
            return Response(status_code=200, content=json.dumps(envelope_success(None)),
                            media_type="application/json")

    def _tus_info(self, uid: str) -> dict[str, Any] | None:
        path = self.tus_dir / f"{uid}.info"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _tus_router(self, base: str) -> Any:
        fake = self

        async def pre_create_dep(request: Request, response: Response) -> _PreCreate:
            def hook(metadata: dict[str, str], info: dict[str, Any]) -> None:
                size = info.get("size")
                if size is None or info.get("defer_length"):
                    raise StarletteHTTPException(400, "Upload-Length is required (deferred length is not "
                                                      "supported)")
                if size > fake.max_video_bytes:
                    raise StarletteHTTPException(413, "Video is over the maximum upload size")
                creator = request.headers.get("upload-creator")
                if creator is not None and len(creator) > MAX_CREATOR:
                    raise StarletteHTTPException(400, "Upload-Creator must be at most 64 characters")
                uid = uuid.uuid4().hex
                meta = {k: v for k, v in metadata.items() if k.lower() not in STREAM_SETTING_KEYS}
                with fake._data_lock:
                    fake._videos[uid] = FakeVideo(uid=uid, size=int(size), meta=meta, creator=creator,
                                                  ready=int(size) == 0)
                    fake.videos_created += 1
                request.state.stream_uid = uid
                response.headers["stream-media-id"] = uid

            return hook

        async def file_dep(request: Request) -> Callable[[dict[str, str]], dict[str, str]]:
            def choose(metadata: dict[str, str]) -> dict[str, str]:
                uid = getattr(request.state, "stream_uid", None)
                return {"uid": uid} if request.method == "POST" and uid else {}

            return choose

        def completed(path: str, metadata: dict[str, str]) -> None:
            video = fake.video(os.path.basename(path))
            if video is not None:
                video.ready = True

        return create_tus_router(
            prefix=f"{base}/stream",
            files_dir=str(self.tus_dir),
            max_size=self.max_video_bytes,
            on_upload_complete=completed,
            # tuspyserver types these as plain callables; FastAPI resolves them as dependencies
            pre_create_dep=cast(Any, pre_create_dep),
            file_dep=cast(Any, file_dep),
        )

    def _video_json(self, video: FakeVideo) -> dict[str, Any]:
        info = self._tus_info(video.uid) or {}
        ready = video.ready and not self.hold_pending
        state = "ready" if ready else "pendingupload"
        cdn = f"{self.url}/stream-cdn/{video.uid}"
        return {
            "uid": video.uid,
            "creator": video.creator,
            "meta": video.meta,
            "size": video.size,
            "created": video.created,
            "modified": video.created,
            "uploaded": video.created if ready else None,
            "status": {"state": state, "pctComplete": "100.000000" if ready else "0.000000",
                       "errorReasonCode": "", "errorReasonText": ""},
            "readyToStream": ready,
            "readyToStreamAt": video.created if ready else None,
            "requireSignedURLs": False,
            "duration": -1,
            "input": {"width": -1, "height": -1},
            "preview": f"{cdn}/watch",
            "thumbnail": f"{cdn}/thumbnails/thumbnail.jpg",
            "playback": {"hls": f"{cdn}/manifest/video.m3u8", "dash": f"{cdn}/manifest/video.mpd"},
            "maxSizeBytes": None,
            "uploadOffset": info.get("offset"),
        }

    # --- gate: auth, Stream's chunk rules, PATCH byte counts ------------------------------------
    def chunk_problem(self, uid: str, offset: int | None, length: int | None) -> tuple[int, str] | None:
        """Why Stream refuses this PATCH, or None. Every chunk but the last: >= min, multiple of 256 KiB."""
        video = self.video(uid)
        info = self._tus_info(uid)
        if video is None or info is None:
            return None  # tus answers 404 itself
        if length is None:
            return 400, "Content-Length is required"
        if offset is None:
            return 400, "Upload-Offset is required"
        if length > MAX_TUS_CHUNK:
            return 413, "Chunk size must be at most 200 MiB"
        if offset + length >= video.size:
            return None  # the final chunk is exempt
        if length % TUS_ALIGN:
            return 400, "Chunk size must be a multiple of 256KiB"
        if length < self.min_chunk:
            return 400, f"Chunk size must be at least {self.min_chunk} bytes unless it is the last chunk"
        return None

    def count_patch(self, uid: str, n: int) -> None:
        with self._data_lock:
            self.patch_bytes_total += n
            self.patch_bytes[uid] = self.patch_bytes.get(uid, 0) + n


class _Gate:
    """ASGI middleware in front of the app: the added latency, the account limit, Cloudflare's auth (API
    token on the API port, batch tokens and their limit on the batch port), the account's quota, Stream's
    tus chunk rules, and the scripted wrong answers."""

    #: What the batch host serves (the documented list, as far as the sinks use it): method, path pattern.
    BATCH_ROUTES = (("POST", "/images/v1"), ("GET", "/images/v1/"), ("DELETE", "/images/v1/"),
                    ("PATCH", "/images/v1/"))

    def __init__(self, app: ASGIApp, fake: FakeCloudflare) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.fake.latency:
            await asyncio.sleep(self.fake.latency)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if (scope.get("server") or ("", 0))[1] == self.fake.batch_port:
            await self._batch_host(scope, receive, send, headers)
            return
        if not scope["path"].startswith("/client/v4/"):
            await self.app(scope, receive, send)
            return
        wait = self.fake.account_wait()
        if wait is not None:
            await self._refuse(scope, receive, send, 429, 971, "Please wait and consider throttling your request "
                               "speed", {"retry-after": str(math.ceil(wait))})
            return
        parts = scope["path"].split("/")  # '', client, v4, accounts, <id>, ...
        if headers.get("authorization") != f"Bearer {self.fake.token}":
            await self._refuse(scope, receive, send, 401, 10000, "Authentication error")
            return
        if len(parts) < 5 or parts[3] != "accounts" or parts[4] != self.fake.account_id:
            await self._refuse(scope, receive, send, 403, 10000, "Authentication error")
            return
        await self._handle(scope, receive, send, parts, headers)

    async def _batch_host(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """The batch host: the account API's own Images handlers, reached with a batch token."""
        method, path = scope["method"], scope["path"]
        served = any(method == m and (path == p if not p.endswith("/") else path.startswith(p) and path != p)
                     for m, p in self.BATCH_ROUTES)
        if not served or path in ("/images/v1/batch_token", "/images/v1/stats"):
            await self._refuse(scope, receive, send, 404, 10003, f"No route for {method} {path} on the batch host")
            return
        authorization = headers.get("authorization", "")
        problem = self.fake.batch_token_problem(authorization)
        if problem is not None:
            await self._refuse(scope, receive, send, 401, 10000, f"Authentication error ({problem})")
            return
        wait = self.fake.batch_wait(authorization)
        if wait is not None:
            await self._refuse(scope, receive, send, 429, 971, "Please wait and consider throttling your request "
                               "speed", {"retry-after": str(max(1, math.ceil(wait)))})
            return
        base = self.fake.base_path
        inner = {**scope, "path": base + path, "raw_path": base.encode() + scope.get("raw_path", path.encode())}
        await self._handle(inner, receive, send, inner["path"].split("/"), headers, logged_path=path)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, parts: list[str], headers: dict[str, str],
                      logged_path: str | None = None) -> None:
        wrong = self.fake.take_misanswer(scope["method"], logged_path or scope["path"])
        if wrong is None:
            await self._dispatch(scope, receive, send, parts, headers)
            return
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self._dispatch(scope, receive, capture, parts, headers)
        await self._answer_wrongly(wrong, captured, send, parts, headers)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, parts: list[str],
                        headers: dict[str, str]) -> None:
        if scope["method"] == "POST" and len(parts) == 6 and parts[5] == "stream" and self.fake.stream_storage_full:
            # code and message as a live account without storage answered (a public log); the FAQ says 413/429
            await self._refuse(scope, receive, send, 413, 10011,
                               "Storage capacity exceeded: the account has used its allocated minutes")
            return
        if scope["method"] == "PATCH" and len(parts) == 7 and parts[5] == "stream":
            await self._patch(scope, receive, send, parts[6], headers)
            return
        await self.app(scope, receive, send)

    async def _answer_wrongly(self, wrong: WrongAnswer, captured: list[Message], send: Send, parts: list[str],
                              headers: dict[str, str]) -> None:
        start = next(m for m in captured if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        status: int = start["status"]
        out = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if wrong.how == "cut":
            await send({"type": "http.response.start", "status": status,
                        "headers": [*out, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise ConnectionResetError("misanswer: the connection dropped after the request was handled")
        if wrong.how == "success_false":
            status, body = 200, json.dumps({"success": False, "errors": [], "messages": [], "result": None}).encode()
        elif wrong.how == "truncated":
            body = body[: len(body) // 2]
        elif wrong.how == "result":
            data = json.loads(body)
            data["result"] = {**(data.get("result") or {}), **(wrong.result or {})}
            body = json.dumps(data).encode()
        else:
            out = [(k, v) for k, v in out if k.lower() != b"upload-offset"]
            out.append((b"upload-offset", str(self._wrong_offset(wrong.how, start, parts, headers)).encode()))
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    def _wrong_offset(self, how: Misanswer, start: Message, parts: list[str], headers: dict[str, str]) -> int:
        if how == "offset_stale":
            return int(headers.get("upload-offset", "0"))
        real = next((int(v) for k, v in start.get("headers", []) if k.lower() == b"upload-offset"), 0)
        info = self.fake._tus_info(parts[-1]) or {}
        length = int(info.get("size") or 0)
        return length if real < length else length + 1

    async def _patch(self, scope: Scope, receive: Receive, send: Send, uid: str,
                     headers: dict[str, str]) -> None:
        def number(name: str) -> int | None:
            try:
                return int(headers[name])
            except (KeyError, ValueError):
                return None

        problem = self.fake.chunk_problem(uid, number("upload-offset"), number("content-length"))
        if problem is not None:
            await self._refuse(scope, receive, send, problem[0], 10005, problem[1])
            return

        async def counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.fake.count_patch(uid, len(message.get("body", b"")))
            return message

        with self.fake._data_lock:
            self.fake.patch_sizes.setdefault(uid, []).append(number("content-length") or 0)
            self.fake._patching[uid] = self.fake._patching.get(uid, 0) + 1
        try:
            await self.app(scope, counting, send)
        finally:
            with self.fake._data_lock:
                self.fake._patching[uid] -= 1

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: int,
                      message: str, extra: dict[str, str] | None = None) -> None:
        while True:  # read the body first so the client sees the answer, not a reset
            msg = await receive()
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break
        body = json.dumps(envelope_failure(code, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                *((k.encode(), v.encode()) for k, v in (extra or {}).items())]})
        await send({"type": "http.response.body", "body": body})

