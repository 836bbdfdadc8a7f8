"""Cloudflare Images: one multipart POST per image, with the file's id as the image's custom id.

The custom id makes uploads idempotent: a repeat (after a crash between upload and marking, or a
retry after a 524 whose first attempt did land) answers 5409 "already exists", which we treat as
success and read the image back. The multipart body is streamed, never held whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar

import requests
from requests_toolbelt import MultipartEncoder

from filesync.errors import ErrorClass, PermanentError
from filesync.http import translated
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import Counted
from filesync.sinks._cloudflare import (
    SETTINGS,
    CloudflareAccount,
    CloudflareSettings,
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
#: the path is the longest and is in the app's table anyway; fileId repeats the image id.
DROP_ORDER = ("path", "fileId", "gpsCoordinates", "dateTaken")


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
        image_id = remote_id or obj.file_id
        with translated(self.name):
            response = self.http.get(self.account.url("images", "v1", image_id))
        if response.status_code == 404 or NOT_FOUND in error_codes(response):
            return None
        data = self._raise(response)
        return self._remote(data.get("result") or {}, obj, existed=True)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        if len(obj.file_id) > MAX_ID_CHARS:
            raise PermanentError(f"file id is over Cloudflare's {MAX_ID_CHARS} characters for a custom id",
                                 sink=self.name, error_class=ErrorClass.INVALID)
        body.seek(0)
        # requests-toolbelt streams multipart with a known Content-Length; requests' own `files=`
        # would build the whole body in memory.
        form = MultipartEncoder(fields={
            "id": obj.file_id,
            "metadata": fit_metadata(obj.metadata()),
            "requireSignedURLs": "false",
            "file": (obj.name or obj.file_id, Counted(body, obj.size, session.progress, sink=self.name), obj.mime),
        })
        with translated(self.name):
            response = self.http.post(
                self.account.url("images", "v1"), data=form, headers={"Content-Type": form.content_type}
            )
        if response.status_code >= 400 and ALREADY_EXISTS in error_codes(response):
            found = self.exists(obj)
            if found is not None:
                return found
        data = self._raise(response)
        return self._remote(data.get("result") or {}, obj, existed=False)

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
