"""Cloudinary as a destination, through the official SDK (it signs every request).

Credentials are passed with every call rather than through the SDK's process-wide `cloudinary.config`,
so two sinks with different accounts can coexist and a `CLOUDINARY_*` variable the SDK reads at import
cannot change where files go. The public_id is the file id, so a repeat upload with `overwrite=False`
is answered by Cloudinary with the asset it already has (`"existing": true`) and stores nothing new.
Bodies up to CLOUDINARY_CHUNK_BYTES go in one request; larger ones in chunks of that size (the SDK
holds a chunk in memory, twice while encoding it), so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import cloudinary.api
import cloudinary.exceptions as cld
import cloudinary.uploader
import urllib3.exceptions

from filesync.errors import (
    BodyEndedEarly,
    ConfigError,
    DestinationRefused,
    ErrorClass,
    NetworkError,
    PermanentError,
    RateLimited,
    ServerError,
    SinkError,
    SinkTimeout,
)
from filesync.http import error_for_status
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.settings import Setting, http_url, positive_int, setting, settings_of
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import read_up_to
from filesync.sinks.naming import safe_name

MIN_CHUNK = 5 * 1024 * 1024  # "All parts except EOF-chunk must be larger than 5mb"
DEFAULT_CHUNK = 20_000_000  # the SDK's own default for upload_large
RESOURCE_TYPES: Mapping[Kind, str] = {Kind.IMAGE: "image", Kind.VIDEO: "video", Kind.OTHER: "raw"}
#: Characters Cloudinary does not allow in a public_id, and `~`, which escapes them.
_ESCAPED = frozenset("?&#\\%<>~")
_STATUS = re.compile(r"(?:^Error (\d{3}) - |server response \((\d{3})\))")


@dataclass(frozen=True)
class CloudinaryAccount:
    """The parts of CLOUDINARY_URL; the secret stays out of the repr."""

    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)
    upload_prefix: str | None = None

    def options(self) -> dict[str, Any]:
        """Per-call SDK options that override anything in the SDK's global config."""
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "upload_prefix": self.upload_prefix,
            "oauth_token": None,
        }


def cloudinary_account(raw: str) -> CloudinaryAccount:
    """Parse `cloudinary://API_KEY:API_SECRET@CLOUD_NAME[?upload_prefix=URL]` (messages never echo it)."""
    form = "must be cloudinary://API_KEY:API_SECRET@CLOUD_NAME"
    try:
        parts = urlsplit(raw.strip())
        username, password = parts.username, parts.password
    except ValueError:
        raise ValueError(form) from None
    cloud = parts.netloc.rpartition("@")[2]
    if parts.scheme != "cloudinary" or not (username and password and cloud) or parts.path not in ("", "/"):
        raise ValueError(form)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"upload_prefix"})
    if unknown:
        raise ValueError(f"unsupported query parameter(s): {', '.join(unknown)} (only upload_prefix)")
    prefix = query.get("upload_prefix", [""])[-1]
    upload_prefix = http_url(prefix) if prefix else None
    return CloudinaryAccount(cloud, unquote(username), unquote(password), upload_prefix)


def escape_id(file_id: str) -> str:
    """A public_id Cloudinary accepts for any file id, one-to-one: `?&#\\%<>~` and spaces at either
    end become `~XX` (their hex code), so ids that differ never share a public_id."""
    core = file_id.strip(" ")
    lead = len(file_id) - len(file_id.lstrip(" "))
    trail = len(file_id) - lead - len(core)
    body = "".join(f"~{ord(c):02x}" if c in _ESCAPED else c for c in core)
    return "~20" * lead + body + "~20" * trail if core else "~20" * len(file_id)


def folder(raw: str) -> str:
    value = raw.strip().strip("/")
    if _ESCAPED.intersection(value):
        raise ValueError(f"must not contain any of {' '.join(sorted(_ESCAPED))}")
    try:
        return safe_name(value, sink="cloudinary")
    except SinkError as exc:
        raise ValueError(exc.reason) from None


def chunk_bytes(raw: str) -> int:
    value = positive_int(raw)
    if value < MIN_CHUNK:
        raise ValueError(f"must be at least {MIN_CHUNK} (Cloudinary's smallest chunk)")
    return value


@dataclass(frozen=True)
class CloudinarySettings:
    account: CloudinaryAccount = setting(
        "CLOUDINARY_URL", "cloudinary://API_KEY:API_SECRET@CLOUD_NAME, from the Cloudinary console.",
        required=True, secret=True, parse=cloudinary_account, group="Sink: cloudinary")
    folder: str | None = setting("CLOUDINARY_FOLDER", "Folder the public_ids go under.", parse=folder,
                                 group="Sink: cloudinary")
    chunk_bytes: int = setting("CLOUDINARY_CHUNK_BYTES", "Files larger than this are sent in chunks of this size "
                               "(at least 5 MiB); also the most memory one transfer holds.",
                               default=str(DEFAULT_CHUNK), parse=chunk_bytes, group="Sink: cloudinary")


class CloudinarySink:
    name: ClassVar[str] = "cloudinary"
    Settings: ClassVar[type[CloudinarySettings]] = CloudinarySettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(CloudinarySettings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE, Kind.VIDEO, Kind.OTHER}), keeps_metadata=True, checksum=None
    )

    def __init__(
        self, account: CloudinaryAccount, *, folder: str = "", chunk_bytes: int = DEFAULT_CHUNK,
        timeout: float = 120.0,
    ) -> None:
        if chunk_bytes < MIN_CHUNK:
            raise ConfigError(f"CLOUDINARY_CHUNK_BYTES must be at least {MIN_CHUNK}")
        self.account = account
        self.folder = folder.strip("/")
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout

    @classmethod
    def from_settings(cls, values: CloudinarySettings, context: SinkContext) -> CloudinarySink:
        return cls(
            values.account,
            folder=values.folder or "",
            chunk_bytes=values.chunk_bytes,
            timeout=context.http_timeout,
        )

    def __repr__(self) -> str:
        return f"CloudinarySink(cloud={self.account.cloud_name!r}, folder={self.folder!r})"

    # --- names ------------------------------------------------------------------------------------
    def _public_id(self, obj: SourceObject) -> str:
        """The file id under the folder; `..`, absolute and NUL are refused before any request."""
        wanted = escape_id(obj.file_id)
        return safe_name(f"{self.folder}/{wanted}" if self.folder else wanted, sink=self.name)

    # --- calls ------------------------------------------------------------------------------------
    def _admin_options(self) -> dict[str, Any]:
        return {**self.account.options(), "timeout": self.timeout}

    def _upload_options(self, obj: SourceObject, public_id: str) -> dict[str, Any]:
        return {
            **self._admin_options(),
            "resource_type": RESOURCE_TYPES[obj.kind],
            "public_id": public_id,
            "overwrite": False,
            "unique_filename": False,
            "use_filename": False,
            "context": obj.metadata(),
            "upload_preset": None,
            "signature_algorithm": "sha1",
            "signature_version": 2,
            "return_error": True,  # errors come back with their HTTP status instead of a bare exception
        }

    def _call(self, fn: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        try:
            result = fn(*args, **options)
        except Exception as exc:  # the SDK raises bare Exception for some statuses
            raise self._translate(exc) from None
        if not isinstance(result, dict):
            raise ServerError("unexpected response from Cloudinary", sink=self.name)
        error = result.get("error")
        if isinstance(error, dict):
            status = int(error.get("http_code") or 500)
            raise self._status_error(status, str(error.get("message") or ""))
        return result

    def _scrub(self, text: str) -> str:
        """Neither credential in a message (the key is not secret, but it is half of the pair)."""
        for value in (self.account.api_secret, self.account.api_key):
            text = text.replace(value, "***")
        return text[:300]

    def _status_error(self, status: int, message: str) -> SinkError:
        reason = self._scrub(message) or f"HTTP {status}"
        if status == 420:  # Cloudinary's own "rate limited" status
            return RateLimited(reason, sink=self.name, status=status)
        return error_for_status(status, reason, sink=self.name)

    def _translate(self, exc: Exception) -> SinkError:
        """SDK exceptions into ours. The SDK wraps urllib3 errors, so look at what it wrapped."""
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, urllib3.exceptions.MaxRetryError):
            cause = cause.reason or cause
        if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
            return SinkTimeout(f"timed out: {type(cause).__name__}", sink=self.name)
        if isinstance(cause, urllib3.exceptions.HTTPError | OSError):
            return NetworkError(f"connection failed: {type(cause).__name__}", sink=self.name)
        message = self._scrub(str(exc))
        found = _STATUS.search(message)
        status = int(found.group(1) or found.group(2)) if found else None
        if isinstance(exc, cld.RateLimited):
            return RateLimited(message, sink=self.name, status=status)
        if isinstance(exc, cld.NotFound):
            return PermanentError(message, sink=self.name, status=status or 404,
                                  error_class=ErrorClass.NOT_FOUND)
        if isinstance(exc, cld.AuthorizationRequired) or status == 401:
            return DestinationRefused(f"API key or secret refused for cloud {self.account.cloud_name!r}: {message}",
                                      sink=self.name, status=status or 401, setting="CLOUDINARY_URL")
        if isinstance(exc, cld.AuthorizationRequired | cld.NotAllowed | cld.BadRequest | cld.AlreadyExists):
            return PermanentError(message, sink=self.name, status=status)
        if status is not None:
            return self._status_error(status, message)
        if isinstance(exc, cld.Error):
            return ServerError(message or type(exc).__name__, sink=self.name)
        return SinkError(f"{type(exc).__name__}: {message}", sink=self.name, error_class=ErrorClass.INTERNAL)

    # --- the contract ------------------------------------------------------------------------------
    def check(self) -> None:
        host = urlsplit(self.account.upload_prefix or "https://api.cloudinary.com").netloc
        try:
            self._call(cloudinary.api.ping, **self._admin_options())
        except (NetworkError, SinkTimeout) as exc:
            raise NetworkError(f"Cloudinary API at {host} is unreachable ({exc.reason})",
                               sink=self.name) from None
        except PermanentError as exc:
            if exc.status in (401, 403):
                raise PermanentError(f"API key or secret refused for cloud {self.account.cloud_name!r}",
                                     sink=self.name, status=exc.status) from None
            raise

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        public_id = remote_id or self._public_id(obj)
        try:
            info = self._call(cloudinary.api.resource, public_id, resource_type=RESOURCE_TYPES[obj.kind],
                              type="upload", **self._admin_options())
        except PermanentError as exc:
            if exc.error_class is ErrorClass.NOT_FOUND:
                return None
            raise
        return self._remote(info, obj, existed=True)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        public_id = self._public_id(obj)
        options = self._upload_options(obj, public_id)
        filename = obj.name or "file"
        if obj.size <= self.chunk_bytes:
            data = read_up_to(body, obj.size + 1)
            self._check_length(obj, len(data))
            result = self._call(cloudinary.uploader.upload, (filename, data), **options)
            session.progress(len(data))
        else:
            existing = None if session.replace else self.exists(obj)  # one Admin call, not every chunk again
            if existing is not None:
                return existing
            result = self._upload_chunks(obj, body, session, filename, options)
        return self._remote(result, obj, existed=bool(result.get("existing")))

    def _upload_chunks(self, obj: SourceObject, body: BinaryIO, session: UploadSession, filename: str,
                       options: dict[str, Any]) -> dict[str, Any]:
        """Cloudinary's chunked upload: parts share an upload id; the last one returns the asset."""
        upload_id = secrets.token_hex(16)
        sent = 0
        result: dict[str, Any] = {}
        while sent < obj.size:
            want = min(self.chunk_bytes, obj.size - sent)
            last = sent + want == obj.size
            data = read_up_to(body, want + 1 if last else want)  # the last read also proves the stream ends
            if len(data) != want:
                self._check_length(obj, sent + len(data))
            headers = {"Content-Range": f"bytes {sent}-{sent + len(data) - 1}/{obj.size}",
                       "X-Unique-Upload-Id": upload_id}
            result = self._call(cloudinary.uploader.upload_large_part, (filename, data), http_headers=headers,
                                **options)
            sent += len(data)
            session.progress(len(data))
            del data
        if not result.get("public_id") or result.get("done") is False:
            raise ServerError("chunked upload ended without an asset", sink=self.name)
        return result

    def _check_length(self, obj: SourceObject, got: int) -> None:
        if got != obj.size:
            raise BodyEndedEarly(f"source {obj.path!r}", got, obj.size, sink=self.name)

    def _remote(self, info: Mapping[str, Any], obj: SourceObject, *, existed: bool) -> RemoteObject:
        return RemoteObject(
            remote_id=str(info.get("public_id")), url=info.get("secure_url") or info.get("url"),
            size=int(info.get("bytes") or obj.size), checksum=None, existed=existed,
        )

    def name_of(self, obj: SourceObject) -> str | None:
        return None  # named by the file id: two files never share a name

    def close(self) -> None:
        pass  # the SDK's connection pool is process-wide


_conforms: type[Sink] = CloudinarySink
