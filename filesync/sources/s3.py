"""DigitalOcean Spaces (or any S3-compatible bucket) as the source, through boto3."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

from filesync.errors import SourceDenied, SourceError, SourceNotFound, SourceRefused, SourceUnavailable
from filesync.retry import RetryPolicy
from filesync.s3client import BotoCoreError, ClientError, failure, make_client, region_from_endpoint
from filesync.settings import Setting, http_url, setting, settings_of
from filesync.sources import Entry, ObjectInfo, SourceContext

#: Listing errors that mean the bucket as a whole cannot be read, not one object.
_UNLISTABLE = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
#: A listing page is one request: the shared policy retries it, like any other request.
_PAGE_POLICY = RetryPolicy()


@dataclass(frozen=True)
class SpacesSettings:
    endpoint: str = setting("SPACES_ENDPOINT", "Endpoint of the bucket, e.g. https://nyc3.digitaloceanspaces.com.",
                            required=True, parse=http_url, group="Source")
    key: str = setting("SPACES_KEY", "Access key of the bucket.", required=True, secret=True, group="Source")
    secret: str = setting("SPACES_SECRET", "Secret key of the bucket.", required=True, secret=True, group="Source")
    bucket: str = setting("SPACES_BUCKET", "Bucket (Space) holding the files.", required=True, group="Source")
    region: str | None = setting("SPACES_REGION", "Region; derived from the endpoint when unset.", group="Source")


class S3Source:
    name: ClassVar[str] = "s3"
    Settings: ClassVar[type[SpacesSettings]] = SpacesSettings
    SETTINGS: ClassVar[tuple[Setting, ...]] = settings_of(SpacesSettings)

    def __init__(self, client: Any, bucket: str, *, page_size: int = 1000) -> None:
        self._client = client
        self.bucket = bucket
        self.page_size = page_size  # MaxKeys per listing request; tests lower it to force several pages

    @classmethod
    def from_settings(cls, values: SpacesSettings, context: SourceContext | None = None) -> S3Source:
        context = context or SourceContext()
        client = make_client(
            endpoint=values.endpoint, region=values.region or region_from_endpoint(values.endpoint),
            key=values.key, secret=values.secret, timeout=context.http_timeout,
            pool=max(10, context.concurrency * 2),
        )
        return cls(client, values.bucket)

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            f = failure(exc)
            hint = ": check SPACES_KEY and SPACES_SECRET" if f.refused_credentials else ""
            raise SourceUnavailable(f"bucket {self.bucket!r} cannot be read: {f.code or exc}{hint}") from None
        except (BotoCoreError, OSError) as exc:
            what = "did not answer in time" if failure(exc).timeout else "cannot be reached"
            raise SourceUnavailable(f"bucket endpoint {what}: {type(exc).__name__}") from None

    def _translate(self, key: str, exc: Exception) -> SourceError:
        f = failure(exc)
        if f.missing:
            return SourceNotFound("not found in bucket")
        if f.refused_credentials:
            return SourceDenied(f"bucket {self.bucket!r} refused access to {key!r}: {f.code}",
                                setting="SPACES_KEY and SPACES_SECRET")
        if f.answered:
            error_type = SourceError if f.transient else SourceRefused
            return error_type(f"bucket refused {key!r}: {f.code}")
        if f.timeout:
            return SourceError(f"reading {key!r} timed out")
        return SourceError(f"reading {key!r} failed: {f.code}")

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

        Each page is one request, retried by the shared policy; a page is never held after it is yielded.
        """
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = _PAGE_POLICY.call(functools.partial(self._list_page, prefix, extra))
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if key.endswith("/"):
                    continue
                yield Entry(
                    key=key, size=int(item["Size"]), etag=str(item.get("ETag", "")).strip('"') or None,
                    modified=item.get("LastModified"),
                )
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return

    def _list_page(self, prefix: str, extra: Mapping[str, str]) -> dict[str, Any]:
        try:
            return self._client.list_objects_v2(  # type: ignore[no-any-return]
                Bucket=self.bucket, Prefix=prefix, MaxKeys=self.page_size, **extra)
        except ClientError as exc:
            code = failure(exc).code
            if code in _UNLISTABLE:
                raise SourceUnavailable(f"bucket {self.bucket!r} cannot be listed: {code}") from None
            raise self._translate(prefix, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(prefix, exc) from None

    def read_head(self, key: str, n: int) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{n - 1}")
        except ClientError as exc:
            if failure(exc).code == "InvalidRange":
                return b""
            raise self._translate(key, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        with obj["Body"] as body:
            return bytes(body.read(n))

    def open_with_info(self, key: str) -> tuple[ObjectInfo, BinaryIO]:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        info = ObjectInfo(size=int(obj["ContentLength"]), content_type=obj.get("ContentType"),
                          etag=str(obj.get("ETag", "")).strip('"') or None)
        return info, obj["Body"]

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key, **extra)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._translate(key, exc) from None
        return obj["Body"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client.close()
