"""Cloudflare Images: one multipart POST per image, with the file's id as the image's custom id.

The custom id makes uploads idempotent: a repeat (after a crash between upload and marking) answers
5409 "already exists", and the image read back by that id counts as done when its `meta.fileId` is
ours. An answer that does not say whether the image was stored (a 5xx or 524, `success: false`, a
truncated body, a timeout or a dropped connection) is resolved in one place, `_resolve`: the image is
looked up by its id before anything is recorded. Custom ids cannot be overwritten, so replacing a
changed file deletes the image first. The multipart body is streamed, never held whole in memory.

Uploads, lookups and deletes go to the batch host (`CLOUDFLARE_IMAGES_BATCH_BASE`) under a batch token,
outside the account's 1,200 requests per 5 minutes; the token call, `check` and the fallback when the
account has no batch API use the account API and its shared pacer. `_send` is the one place a call
chooses its host; the answers are the same on both, so everything above it is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import requests
from requests_toolbelt import MultipartEncoder

from filesync.errors import (
    DestinationRefused,
    ErrorClass,
    NetworkError,
    PermanentError,
    ServerError,
    SinkError,
    SinkTimeout,
    TransientError,
)
from filesync.http import translated
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting, boolean, http_url, setting, settings_of
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import Counted
from filesync.sinks._cloudflare import (
    DEFAULT_IMAGES_BATCH_BASE,
    GROUP,
    BatchToken,
    CloudflareAccount,
    CloudflareSettings,
    ImagesBatch,
    Secrets,
    answer,
    api_error,
    batch_base_for,
    error_codes,
    make_cloudflare_session,
    raise_for_envelope,
)

ALREADY_EXISTS = 5409
NOT_FOUND = 5404
MAX_METADATA_BYTES = 1024
MAX_ID_CHARS = 1024
#: Metadata keys in the order they are given up when the JSON is over Cloudflare's 1,024 bytes:
#: the path is the longest and is in the app's table anyway; fileId goes last, as it is how a
#: lookup tells our image from another that holds the same id.
DROP_ORDER = ("path", "gpsCoordinates", "dateTaken", "fileId")


@dataclass(frozen=True)
class ImagesSettings(CloudflareSettings):
    batch: bool = setting("FILESYNC_CLOUDFLARE_IMAGES_BATCH", "Send Images uploads, lookups and deletes through "
                          "Cloudflare's batch API: 200 requests/s per batch token, outside the account's 1200 "
                          "requests per 5 minutes. false: the account API, paced at FILESYNC_CLOUDFLARE_RPS.",
                          default="true", parse=boolean, group=GROUP)
    batch_base: str = setting("CLOUDFLARE_IMAGES_BATCH_BASE", "Images batch host; calls go to "
                              "<base>/images/v1/... With a CLOUDFLARE_API_BASE other than Cloudflare's, only a "
                              "batch host set here gets its tokens (else the account API is used).",
                              default=DEFAULT_IMAGES_BATCH_BASE, parse=http_url, group=GROUP)


class CloudflareImagesSink:
    name: ClassVar[str] = "cloudflare-images"
    Settings: ClassVar[type[ImagesSettings]] = ImagesSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(ImagesSettings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE}),
        max_bytes=10_000_000,
        max_dimension=12_000,
        max_area=100_000_000,
        mimes=frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/svg+xml", "image/heic",
                         "image/avif"}),
        keeps_metadata=True,
    )

    def __init__(self, account: CloudflareAccount, timeout: float = 120.0, *, batch: bool = True,
                 batch_base: str | None = None) -> None:
        """`batch_base` None: Cloudflare's batch host when `account` is on Cloudflare's API (see
        `batch_base_for`)."""
        self.account = account
        self.http = make_cloudflare_session(account, timeout)
        base = batch_base_for(account.api_base, batch_base) if batch else None
        self.batch = ImagesBatch(account, base, self.http, sink=self.name, timeout=timeout) if base else None

    @classmethod
    def from_settings(cls, values: ImagesSettings, context: SinkContext) -> CloudflareImagesSink:
        return cls(CloudflareAccount.from_settings(values), timeout=context.http_timeout, batch=values.batch,
                   batch_base=values.batch_base)

    def check(self) -> None:
        """The account API answers, and the batch token call too: a plan without the batch API is logged
        (`images_batch_unavailable`) by `filesync check`, not first noticed in a run."""
        with translated(self.name):
            response = self.http.get(self.account.url("images", "v1", "stats"))
        self._raise(response)
        self._route()

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        image = self._lookup(remote_id or obj.file_id)
        if image is None or self._problem(image, obj, looked_up=True):
            return None
        return self._remote(image, obj, existed=True)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        if len(obj.file_id) > MAX_ID_CHARS:
            raise PermanentError(f"file id is over Cloudflare's {MAX_ID_CHARS} characters for a custom id",
                                 sink=self.name, error_class=ErrorClass.INVALID)
        if session.replace:
            self._clear_for_replace(obj)
        metadata = fit_metadata(obj.metadata())

        def form() -> MultipartEncoder:
            """requests-toolbelt streams multipart with a known Content-Length (requests' own `files=`
            would build the whole body in memory); a new one for each send, from the body's start."""
            body.seek(0)
            return MultipartEncoder(fields={
                "id": obj.file_id,
                "metadata": metadata,
                "requireSignedURLs": "false",
                "file": (obj.name or obj.file_id, Counted(body, obj.size, session.progress, sink=self.name),
                         obj.mime),
            })

        self._route()  # a failed token call is that call's error, not an unclear upload
        try:
            response = self._send("POST", form=form)
        except (NetworkError, SinkTimeout) as exc:  # the image may have been stored before the answer broke
            return self._resolve(obj, exc)
        if ALREADY_EXISTS in error_codes(response):
            return self._already_there(obj, replacing=session.replace)
        try:
            result = answer(response, sink=self.name, token=self._secrets())
        except ServerError as exc:  # 5xx, 524, or a 2xx that is not a complete success envelope
            return self._resolve(obj, exc)
        self._check(result, obj, looked_up=False)
        return self._remote(result, obj, existed=False)

    # --- the host of each call ------------------------------------------------------------------
    def _route(self) -> BatchToken | None:
        """The batch token the next call goes with, or None for the account API."""
        return self.batch.token() if self.batch is not None else None

    def _send(self, method: str, *parts: str, form: Callable[[], MultipartEncoder] | None = None) -> requests.Response:
        """One call below images/v1: to the batch host under a batch token, or to the account API. A 401
        from the batch host gets a new token and the call goes once more; a fresh token refused as well
        ends the batch path for this sink, and the call goes to the account API."""
        token = self._route()
        if self.batch is None or token is None:
            return self._request(self.http, self.account.url("images", "v1", *parts), method, None, form)
        response = self._request(self.batch.http, self.batch.url(*parts), method, token, form)
        if response.status_code != 401:
            return response
        token = self.batch.refreshed(token)
        if token is not None:
            response = self._request(self.batch.http, self.batch.url(*parts), method, token, form)
            if response.status_code != 401:
                return response
            self.batch.give_up("the batch host refused a freshly fetched token (HTTP 401)")
        return self._request(self.http, self.account.url("images", "v1", *parts), method, None, form)

    def _request(self, http: requests.Session, url: str, method: str, token: BatchToken | None,
                 form: Callable[[], MultipartEncoder] | None) -> requests.Response:
        headers = {"Authorization": token.header} if token is not None else {}
        data = form() if form is not None else None
        if data is not None:
            headers["Content-Type"] = data.content_type
        with translated(self.name):
            return http.request(method, url, data=data, headers=headers)

    def _secrets(self) -> Secrets:
        """Every token an answer could echo: the API token and the batch tokens in use."""
        return (self.account.token, *self.batch.secrets) if self.batch is not None else self.account.token

    # --- steps --------------------------------------------------------------------------------
    def _resolve(self, obj: SourceObject, cause: TransientError) -> RemoteObject:
        """The one answer to an upload whose outcome is unclear: the image is there and ours (done),
        or `cause` is raised, transient, so the retry loop sends it again."""
        try:
            image = self._lookup(obj.file_id)
        except DestinationRefused:
            raise
        except SinkError:
            raise cause from None
        if image is None:
            raise cause
        self._check(image, obj, looked_up=True)
        return self._remote(image, obj, existed=False)

    def _already_there(self, obj: SourceObject, *, replacing: bool) -> RemoteObject:
        """5409: an image holds the id. Ours (by meta.fileId) is an idempotent repeat, unless it was
        just deleted to be replaced."""
        image = self._lookup(obj.file_id)
        if image is None:
            raise ServerError(f"Cloudflare Images answered 'already exists' but has no image {obj.file_id!r}",
                              sink=self.name, status=409)
        self._check(image, obj, looked_up=True)
        if replacing:
            raise ServerError(f"image {obj.file_id!r} is still there after its delete; the next try deletes "
                              "it again", sink=self.name, status=409)
        return self._remote(image, obj, existed=True)

    def _clear_for_replace(self, obj: SourceObject) -> None:
        """Custom ids cannot be overwritten: an older copy of this file is deleted before the upload.
        An image at the id that is not provably this file's is left alone (the upload then fails)."""
        image = self._lookup(obj.file_id)
        if image is None:
            return
        self._check(image, obj, looked_up=True)
        response = self._send("DELETE", obj.file_id)
        if response.status_code != 404 and NOT_FOUND not in error_codes(response):
            self._raise(response)

    def _lookup(self, image_id: str) -> dict[str, Any] | None:
        response = self._send("GET", image_id)
        if response.status_code == 404 or NOT_FOUND in error_codes(response):
            return None
        return answer(response, sink=self.name, token=self._secrets())

    def _check(self, image: Mapping[str, Any], obj: SourceObject, *, looked_up: bool) -> None:
        problem = self._problem(image, obj, looked_up=looked_up)
        if problem is not None:
            raise problem

    def _problem(self, image: Mapping[str, Any], obj: SourceObject, *, looked_up: bool) -> SinkError | None:
        """Why `image` is not this file's upload, or None. Images reports no size, so the proof is the
        id plus the `meta.fileId` we sent; an upload's answer may leave meta out, a lookup may not.
        An answer naming another image is transient (never success); an image that another file
        holds is permanent, as filesync never overwrites it."""
        image_id = image.get("id")
        if image_id != obj.file_id:
            return ServerError(f"Cloudflare Images answered with image {str(image_id)[:80]!r}, not "
                               f"{obj.file_id[:80]!r}", sink=self.name)
        meta = image.get("meta", image.get("metadata"))
        found = meta.get("fileId") if isinstance(meta, Mapping) else None
        if found is not None and found != obj.file_id:
            reason = f"image {obj.file_id[:80]!r} belongs to file {str(found)[:80]!r}; filesync does not overwrite it"
            if looked_up:
                return PermanentError(reason, sink=self.name, status=409, error_class=ErrorClass.CLIENT)
            return ServerError(f"Cloudflare Images answered that {reason}", sink=self.name)
        if found is None and looked_up and "fileId" in json.loads(fit_metadata(obj.metadata())):
            return ServerError(f"image {obj.file_id[:80]!r} carries no meta.fileId, so it is not provably this "
                               "file's upload", sink=self.name)
        return None

    def _raise(self, response: requests.Response) -> dict[str, Any]:
        return raise_for_envelope(response, sink=self.name, token=self._secrets())

    def _remote(self, result: Mapping[str, Any], obj: SourceObject, *, existed: bool) -> RemoteObject:
        image_id = result.get("id")
        if not isinstance(image_id, str) or not image_id:
            raise api_error(502, f"answer without an image id: {str(result)[:100]}", sink=self.name,
                            token=self._secrets())
        variants = result.get("variants") or []
        return RemoteObject(
            remote_id=image_id, url=str(variants[0]) if variants else None, size=obj.size, existed=existed
        )

    def name_of(self, obj: SourceObject) -> str | None:
        return None  # named by the file id: two files never share a name

    def close(self) -> None:
        self.http.close()
        if self.batch is not None:
            self.batch.close()


def fit_metadata(meta: Mapping[str, str], limit: int = MAX_METADATA_BYTES) -> str:
    """The metadata as JSON within Cloudflare's limit, dropping the least useful keys rather than failing."""
    kept = dict(meta)
    encoded = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    for key in DROP_ORDER:
        if len(encoded.encode()) <= limit:
            break
        kept.pop(key, None)
        encoded = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    return encoded if len(encoded.encode()) <= limit else "{}"


_conforms: type[Sink] = CloudflareImagesSink
