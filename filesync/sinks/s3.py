"""Any S3-compatible bucket (AWS, R2, Spaces, MinIO) as a destination, through boto3.

Uploads stream one part at a time through our own multipart loop: memory stays at one part, each
part carries a Content-MD5 the service verifies, and a failure aborts the multipart upload so no
object and no billed orphan parts are left. Objects up to one part go as a single PUT. Metadata
travels as `x-amz-meta-*`; S3 only takes ASCII there, so other values are percent-encoded behind
an RFC 5987 style `utf-8''` marker and decoded on read.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote, unquote

from filesync.errors import (
    ConfigError,
    DestinationRefused,
    ErrorClass,
    NameTaken,
    NetworkError,
    PermanentError,
    RateLimited,
    SinkError,
    SinkTimeout,
)
from filesync.http import error_for_status, retry_after
from filesync.model import Kind, RemoteObject, SourceObject
from filesync.s3client import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    failure,
    make_client,
    region_from_endpoint,
)
from filesync.settings import Setting, http_url, setting, settings_of
from filesync.sinks import Capabilities, Sink, SinkContext, UploadSession
from filesync.sinks._body import fill_exactly, read_exactly
from filesync.sinks.naming import DEFAULT_TEMPLATE, object_name, validate_template

MIB = 1024 * 1024
PART_SIZE = 8 * MIB  # S3's minimum part is 5 MiB; one part is what the sink holds in memory
MAX_PARTS = 10_000
MAX_OBJECT = 5 * 1024 * 1024 * MIB  # 5 TiB, AWS's object limit
ENCODED = "utf-8''"


def encode_meta(value: str) -> str:
    """S3 metadata is ASCII and trimmed: anything else goes percent-encoded behind a marker."""
    plain = value.isascii() and value.isprintable() and value == value.strip()
    plain = plain and not value.startswith(ENCODED)
    return value if plain else ENCODED + quote(value, safe="")


def decode_meta(value: str) -> str:
    return unquote(value[len(ENCODED):]) if value.startswith(ENCODED) else value


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, grown (to whole MiB) when the object would need over 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(preferred, -(-needed // MIB) * MIB)


_GROUP = "Sink: s3"


@dataclass(frozen=True)
class S3Settings:
    bucket: str = setting("FILESYNC_S3_BUCKET", "Bucket the `s3` sink writes to.", required=True, group=_GROUP)
    endpoint: str | None = setting("FILESYNC_S3_ENDPOINT", "Endpoint of an S3-compatible service (R2, Spaces, "
                                   "MinIO); unset: AWS.", parse=http_url, group=_GROUP)
    region: str | None = setting("FILESYNC_S3_REGION", "Region; unset: derived from a Spaces endpoint, else "
                                 "boto3's default.", group=_GROUP)
    key: str | None = setting("FILESYNC_S3_KEY", "Access key; unset: boto3's default credential chain (env, "
                              "profile, role).", secret=True, group=_GROUP)
    secret: str | None = setting("FILESYNC_S3_SECRET", "Secret key paired with FILESYNC_S3_KEY.", secret=True,
                                 group=_GROUP)
    prefix: str = setting("FILESYNC_S3_PREFIX", "Folder inside the bucket that every object goes under.",
                          default="", group=_GROUP)
    storage_class: str | None = setting("FILESYNC_S3_STORAGE_CLASS", "Storage class sent with each object (e.g. "
                                        "STANDARD_IA); unset: the bucket's default.", group=_GROUP)
    template: str = setting("FILESYNC_S3_TEMPLATE", "Object key template: {id} {ext} {path} {name} {stem} {kind} "
                            "{date:%Y/%m}.", default=DEFAULT_TEMPLATE, parse=validate_template, group=_GROUP)
    public_url: str | None = setting("FILESYNC_S3_PUBLIC_URL", "Base URL of public links (CDN or bucket "
                                     "website); unset: s3:// URLs.", parse=http_url, group=_GROUP)


class S3Sink:
    name: ClassVar[str] = "s3"
    Settings: ClassVar[type[S3Settings]] = S3Settings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(S3Settings)
    capabilities = Capabilities(
        kinds=frozenset({Kind.IMAGE, Kind.VIDEO, Kind.OTHER}), max_bytes=MAX_OBJECT, keeps_metadata=True,
        checksum="md5",
    )

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        template: str = DEFAULT_TEMPLATE,
        storage_class: str | None = None,
        public_url: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.template = template
        self.storage_class = storage_class
        self.public_url = public_url.rstrip("/") if public_url else None
        self.part_size = part_size

    @classmethod
    def from_settings(cls, values: S3Settings, context: SinkContext) -> S3Sink:
        key, secret = values.key or None, values.secret or None
        if (key is None) != (secret is None):
            raise ConfigError("FILESYNC_S3_KEY and FILESYNC_S3_SECRET go together: set both, or neither to use "
                              "boto3's default credential chain")
        endpoint = values.endpoint
        region = values.region or (region_from_endpoint(endpoint) if endpoint else None)
        client = make_client(endpoint=endpoint, region=region, key=key, secret=secret,
                             timeout=context.http_timeout, pool=max(10, context.concurrency * 2))
        return cls(
            client,
            values.bucket,
            prefix=values.prefix,
            template=values.template,
            storage_class=values.storage_class or None,
            public_url=values.public_url,
        )

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, obj: SourceObject) -> str:
        return object_name(self.template, obj, sink=self.name, prefix=self.prefix)

    def _url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{quote(key)}"
        return f"s3://{self.bucket}/{quote(key)}"

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            f = failure(exc)
            if f.missing or f.code == "NoSuchBucket":
                raise PermanentError(f"bucket {self.bucket!r} does not exist", sink=self.name, status=f.status,
                                     error_class=ErrorClass.NOT_FOUND) from None
            if f.refused_credentials:
                raise PermanentError(
                    f"access to bucket {self.bucket!r} was refused ({f.code}): check FILESYNC_S3_KEY and "
                    "FILESYNC_S3_SECRET and the key's permissions", sink=self.name, status=f.status) from None
            raise self._translate(exc, f"checking bucket {self.bucket!r}") from None
        except EndpointConnectionError:
            raise NetworkError("endpoint cannot be reached: check FILESYNC_S3_ENDPOINT",
                               sink=self.name) from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(exc, f"checking bucket {self.bucket!r}") from None

    def exists(self, obj: SourceObject, remote_id: str | None = None) -> RemoteObject | None:
        key = remote_id or self._key(obj)
        head = self._head(key)
        if head is None:
            return None
        meta = {k.lower(): decode_meta(v) for k, v in head.get("Metadata", {}).items()}
        return RemoteObject(remote_id=key, url=self._url(key), size=int(head["ContentLength"]),
                            checksum=meta.get("sha256"), existed=True, owner=meta.get("fileid"))

    def name_of(self, obj: SourceObject) -> str | None:
        return self._key(obj)

    def upload(self, obj: SourceObject, body: BinaryIO, session: UploadSession) -> RemoteObject:
        key = self._key(obj)
        existing = self.exists(obj)
        if existing is not None:
            if existing.owner is not None and existing.owner != obj.file_id:
                raise NameTaken(f"{key!r} holds file {existing.owner}'s copy; file {obj.file_id} maps to the same key "
                                "(FILESYNC_S3_TEMPLATE): nothing was overwritten", sink=self.name)
            if existing.owner == obj.file_id and existing.size == obj.size and not session.replace:
                return existing
        extra: dict[str, Any] = {
            "ContentType": obj.mime,
            "Metadata": {k: encode_meta(v) for k, v in obj.metadata().items()},
        }
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        part_size = part_size_for(obj.size, self.part_size)
        if obj.size <= part_size:
            digest = self._put(key, obj, body, extra, session)
        else:
            digest = self._multipart(key, obj, body, extra, part_size, session)
        return RemoteObject(remote_id=key, url=self._url(key), size=obj.size, checksum=digest)

    # --- transfer ------------------------------------------------------------------------------

    def _put(self, key: str, obj: SourceObject, body: BinaryIO, extra: dict[str, Any],
             session: UploadSession) -> str:
        data = read_exactly(body, obj.size, sink=self.name, what=f"source of {key!r}")
        digest = hashlib.sha256(data).hexdigest()
        extra["Metadata"]["sha256"] = digest  # known before the PUT only for single-part objects
        self._call("put_object", key, Bucket=self.bucket, Key=key, Body=data, ContentMD5=_md5(data), **extra)
        session.progress(len(data))
        return digest

    def _multipart(self, key: str, obj: SourceObject, body: BinaryIO, extra: dict[str, Any], part_size: int,
                   session: UploadSession) -> str:
        created = self._call("create_multipart_upload", key, Bucket=self.bucket, Key=key, **extra)
        upload_id = created["UploadId"]
        digest = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        part = bytearray(min(part_size, obj.size))  # one buffer for every part: memory stays at one part
        try:
            remaining = obj.size
            number = 1
            while remaining > 0:
                if remaining < len(part):
                    del part[remaining:]  # the last, shorter part
                fill_exactly(body, part, sink=self.name, what=f"source of {key!r}")
                digest.update(part)
                answer = self._call("upload_part", key, Bucket=self.bucket, Key=key, UploadId=upload_id,
                                    PartNumber=number, Body=part, ContentMD5=_md5(part))
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                session.progress(len(part))
                remaining -= len(part)
                number += 1
            self._call("complete_multipart_upload", key, Bucket=self.bucket, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(key, upload_id)
            raise
        return digest.hexdigest()

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: the original error matters more; buckets should also expire stale uploads."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError, OSError):
            pass

    # --- calls and their errors ------------------------------------------------------------------

    def _call(self, method: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(**kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._translate(exc, f"{method} {key!r}") from None

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except ClientError as exc:
            if failure(exc).missing:
                return None
            raise self._translate(exc, f"head_object {key!r}") from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(exc, f"head_object {key!r}") from None

    def _translate(self, exc: BaseException, action: str) -> SinkError:
        """botocore's exceptions as ours; the reason names the call and S3's code, never a credential."""
        f = failure(exc)
        if f.answered:
            reason = f"{action}: {f.code}{': ' + f.message if f.message and f.message != f.code else ''}"
            if f.refused_credentials:
                return DestinationRefused(f"access refused: {reason}", sink=self.name, status=f.status,
                                          setting="FILESYNC_S3_KEY and FILESYNC_S3_SECRET")
            if f.throttled:
                return RateLimited(reason, retry_after=retry_after(f.headers), sink=self.name, status=f.status)
            if f.code == "BadDigest":
                return NetworkError(f"{action}: the bytes changed in transit (BadDigest)", sink=self.name,
                                    status=f.status)
            return error_for_status(f.status or 500, reason, sink=self.name, headers=f.headers)
        if f.no_credentials:
            return PermanentError("no usable credentials: set FILESYNC_S3_KEY and FILESYNC_S3_SECRET",
                                  sink=self.name, error_class=ErrorClass.INVALID)
        if f.timeout:
            return SinkTimeout(f"{action}: timed out", sink=self.name)
        return NetworkError(f"{action}: {f.code}", sink=self.name)

    def read_metadata(self, obj: SourceObject) -> dict[str, str]:
        """For tests and `verify`: the stored metadata, decoded."""
        head = self._head(self._key(obj)) or {}
        return {k: decode_meta(v) for k, v in head.get("Metadata", {}).items()}

    def close(self) -> None:
        self._client.close()


def _md5(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


_conforms: type[Sink] = S3Sink
