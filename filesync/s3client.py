"""boto3 for the S3 source and the S3 sink: one client configuration and one table of S3's error codes.

Both use one attempt per call (botocore's own retries off): `filesync.retry` decides what is retried,
with the run's accounting. Timeouts come from FILESYNC_HTTP_TIMEOUT, so a bucket that accepts
connections and never answers cannot hang a run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

__all__ = [
    "BotoCoreError",
    "ClientError",
    "EndpointConnectionError",
    "Failure",
    "failure",
    "make_client",
    "region_from_endpoint",
]

CONNECT_TIMEOUT = 10.0
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                       "RequestThrottled"})
AUTH = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
                  "403", "AllAccessDisabled", "AccountProblem"})
TRANSIENT = frozenset({"RequestTimeout", "InternalError", "ServiceUnavailable", "BadDigest"})


def region_from_endpoint(endpoint: str) -> str:
    """`https://nyc3.digitaloceanspaces.com` -> `nyc3`; anything else -> us-east-1."""
    host = urlsplit(endpoint).hostname or ""
    if host.endswith(".digitaloceanspaces.com"):
        return host.split(".")[0]
    return "us-east-1"


_session: boto3.session.Session | None = None
_session_lock = threading.Lock()  # a boto3 session is not thread-safe; the clients it makes are


def _shared_session() -> boto3.session.Session:
    """One session for every client of the process: each session loads S3's service model again (about
    15 MiB), so the source and the s3 sink would hold it twice. Credentials are given per client."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def make_client(*, endpoint: str | None, region: str | None, key: str | None, secret: str | None,
                timeout: float, pool: int) -> Any:
    # when_required: S3-compatible stores (Spaces among them) reject boto3's default aws-chunked
    # CRC32 trailers (shared/reference/bunny_cloudinary_spaces.md section 3).
    config = BotoConfig(
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=pool,
        connect_timeout=min(CONNECT_TIMEOUT, timeout),
        read_timeout=timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _session_lock:
        return _shared_session().client(
            "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret,
            config=config,
        )


@dataclass(frozen=True)
class Failure:
    """What went wrong with one call, in S3's terms, before each side turns it into its own error."""

    code: str  # S3's error code, or the exception's class name when there was no answer
    status: int | None
    message: str
    headers: dict[str, str]
    answered: bool  # the service answered (a ClientError), rather than a timeout or a dropped connection
    timeout: bool = False
    no_credentials: bool = False

    @property
    def missing(self) -> bool:
        return self.code in MISSING

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLED or self.status == 429

    @property
    def refused_credentials(self) -> bool:
        return self.no_credentials or self.code in AUTH or self.status in (401, 403)

    @property
    def transient(self) -> bool:
        if not self.answered:
            return not self.no_credentials
        return self.throttled or self.code in TRANSIENT or (self.status or 0) >= 500


def failure(exc: BaseException) -> Failure:
    """One reading of botocore's exceptions (and built-in OS errors) for both S3 modules."""
    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        error = exc.response.get("Error", {})
        return Failure(code=str(error.get("Code", "") or ""), status=int(status) if status else None,
                       message=str(error.get("Message", "") or ""), headers=dict(meta.get("HTTPHeaders", {})),
                       answered=True)
    timeout = isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError)
    return Failure(code=type(exc).__name__, status=None, message="", headers={}, answered=False, timeout=timeout,
                   no_credentials=isinstance(exc, NoCredentialsError | PartialCredentialsError))
