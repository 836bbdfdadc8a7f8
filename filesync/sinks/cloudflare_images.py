"""Cloudflare Images: one multipart POST per image, with the file's id as the image's custom id.

The custom id makes uploads idempotent: a repeat (after a crash between upload and marking) answers
5409 "already exists", and the image read back by that id counts as done when its `meta.fileId` is
ours. An answer that does not say whether the image was stored (a 5xx or 524, `success: false`, a
truncated body, a timeout or a dropped connection) is resolved in one place, `_resolve`: the image is
looked up by its id before anything is recorded. Custom ids cannot be overwritten, so replacing a
changed file deletes the image first. The multipart body is streamed, never held whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
from filesync.settings import Setting
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import Counted
from filesync.sinks._cloudflare import (
    SETTINGS,
    CloudflareAccount,
    CloudflareSettings,
    answer,
    api_error,
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


class CloudflareImagesSink:
    name: ClassVar[str] = "cloudflare-images"
    Settings: ClassVar[type[CloudflareSettings]] = CloudflareSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = SETTINGS
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE}),
        max_bytes=10_000_000,
        max_dimension=12_000,
        max_area=100_000_000,
        mimes=frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/svg+xml", "image/heic",
                         "image/avif"}),
        keeps_metadata=True,
    )

    def __init__(self, account: CloudflareAccount, timeout: float = 120.0) -> None:
        self.account = account
        self.http = make_cloudflare_session(account, timeout)

    @classmethod
    def from_settings(cls, values: CloudflareSettings, context: SinkContext) -> CloudflareImagesSink:
        return cls(CloudflareAccount.from_settings(values), timeout=context.http_timeout)

    def check(self) -> None:
        with translated(self.name):
            response = self.http.get(self.account.url("images", "v1", "stats"))
        self._raise(response)

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
        body.seek(0)
        # requests-toolbelt streams multipart with a known Content-Length; requests' own `files=`
        # would build the whole body in memory.
        form = MultipartEncoder(fields={
            "id": obj.file_id,
            "metadata": fit_metadata(obj.metadata()),
            "requireSignedURLs": "false",
            "file": (obj.name or obj.file_id, Counted(body, obj.size, session.progress, sink=self.name), obj.mime),
        })
        try:
            with translated(self.name):
                response = self.http.post(
                    self.account.url("images", "v1"), data=form, headers={"Content-Type": form.content_type}
                )
        except (NetworkError, SinkTimeout) as exc:  # the image may have been stored before the answer broke
            return self._resolve(obj, exc)
        if ALREADY_EXISTS in error_codes(response):
            return self._already_there(obj, replacing=session.replace)
        try:
            result = answer(response, sink=self.name, token=self.account.token)
        except ServerError as exc:  # 5xx, 524, or a 2xx that is not a complete success envelope
            return self._resolve(obj, exc)
        self._check(result, obj, looked_up=False)
        return self._remote(result, obj, existed=False)

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
        with translated(self.name):
            response = self.http.delete(self.account.url("images", "v1", obj.file_id))
        if response.status_code != 404 and NOT_FOUND not in error_codes(response):
            self._raise(response)

    def _lookup(self, image_id: str) -> dict[str, Any] | None:
        with translated(self.name):
            response = self.http.get(self.account.url("images", "v1", image_id))
        if response.status_code == 404 or NOT_FOUND in error_codes(response):
            return None
        return answer(response, sink=self.name, token=self.account.token)

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
        return raise_for_envelope(response, sink=self.name, token=self.account.token)

    def _remote(self, result: Mapping[str, Any], obj: SourceObject, *, existed: bool) -> RemoteObject:
        image_id = result.get("id")
        if not isinstance(image_id, str) or not image_id:
            raise api_error(502, f"answer without an image id: {str(result)[:100]}", sink=self.name,
                            token=self.account.token)
        variants = result.get("variants") or []
        return RemoteObject(
            remote_id=image_id, url=str(variants[0]) if variants else None, size=obj.size, existed=existed
        )

    def name_of(self, obj: SourceObject) -> str | None:
        return None  # named by the file id: two files never share a name

    def close(self) -> None:
        self.http.close()


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
