"""DigitalOcean Spaces (or any S3-compatible bucket) as the source, through boto3."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from filesync.errors import SourceError, SourceNotFound, SourceUnavailable
from filesync.settings import Setting, http_url
from filesync.sources import Entry, ObjectInfo

_MISSING = {"404", "NoSuchKey", "NotFound"}
#: Listing errors that mean the bucket as a whole cannot be read, not one object.
_UNLISTABLE = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


def region_from_endpoint(endpoint: str) -> str:
    """`https://nyc3.digitaloceanspaces.com` -> `nyc3`; anything else -> us-east-1."""
    host = urlsplit(endpoint).hostname or ""
    if host.endswith(".digitaloceanspaces.com"):
        return host.split(".")[0]
    return "us-east-1"


def boto_config(pool: int) -> BotoConfig:
    # when_required: S3-compatible stores (Spaces among them) reject boto3's default aws-chunked
    # CRC32 trailers (shared/reference/bunny_cloudinary_spaces.md section 3).
    return BotoConfig(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=120,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class S3Source:
    name: ClassVar[str] = "s3"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("SPACES_ENDPOINT", "Endpoint of the bucket, e.g. https://nyc3.digitaloceanspaces.com.",
                required=True, parse=http_url, group="Source"),
        Setting("SPACES_KEY", "Access key of the bucket.", required=True, secret=True, group="Source"),
        Setting("SPACES_SECRET", "Secret key of the bucket.", required=True, secret=True, group="Source"),
        Setting("SPACES_BUCKET", "Bucket (Space) holding the files.", required=True, group="Source"),
        Setting("SPACES_REGION", "Region; derived from the endpoint when unset.", group="Source"),
    )

    def __init__(self, client: Any, bucket: str, *, page_size: int = 1000) -> None:
        self._client = client
        self.bucket = bucket
        self.page_size = page_size  # MaxKeys per listing request; tests lower it to force several pages

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> S3Source:
        endpoint = values["SPACES_ENDPOINT"]
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=values.get("SPACES_REGION") or region_from_endpoint(endpoint),
            aws_access_key_id=values["SPACES_KEY"],
            aws_secret_access_key=values["SPACES_SECRET"],
            config=boto_config(pool=32),
        )
        return cls(client, values["SPACES_BUCKET"])

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise SourceUnavailable(f"bucket {self.bucket!r} cannot be read: {code or exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise SourceUnavailable(f"bucket endpoint cannot be reached: {type(exc).__name__}") from None

    def _translate(self, key: str, exc: Exception) -> SourceError:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return SourceNotFound("not found in bucket")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            err = SourceError(f"bucket refused {key!r}: {code}")
            err.transient = status >= 500 or code in {"SlowDown", "RequestTimeout", "InternalError"}
            return err
        if isinstance(exc, EndpointConnectionError):
            return SourceError("bucket endpoint cannot be reached")
        return SourceError(f"reading {key!r} failed: {type(exc).__name__}")

    def stat(self, key: str) -> ObjectInfo:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        return ObjectInfo(
            size=int(head["ContentLength"]),
            content_type=head.get("ContentType"),
            etag=str(head.get("ETag", "")).strip('"') or None,
        )

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Keys in S3 order; "folder/" marker objects are left out: they are not files and no key can hold them.

        botocore's own retries (standard mode) cover a transient error on one page.
        """
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])
                    if key.endswith("/"):
                        continue
                    yield Entry(
                        key=key, size=int(item["Size"]), etag=str(item.get("ETag", "")).strip('"') or None,
                        modified=item.get("LastModified"),
                    )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _UNLISTABLE:
                raise SourceUnavailable(f"bucket {self.bucket!r} cannot be listed: {code}") from None
            raise self._translate(prefix, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(prefix, exc) from None

    def read_head(self, key: str, n: int) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{n - 1}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise self._translate(key, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        with obj["Body"] as body:
            return bytes(body.read(n))

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key, **extra)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        return obj["Body"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client.close()
