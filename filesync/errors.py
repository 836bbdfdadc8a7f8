"""Errors raised by filesync.

Drivers (psycopg, boto3, requests, tuspy, cloudinary) are translated into this tree at their edge,
so the pipeline decides what to do from the class alone::

    FilesyncError
      x ConfigError            bad or missing setting -> exit 2, before any work
      x LedgerUnavailable      PostgreSQL unreachable -> exit 3; the daemon keeps its schedule
      x LedgerError            any other database error
        + LeaseLost            the file's lease expired or moved: the mark is refused
      x SourceUnavailable      the bucket cannot be reached at all -> exit 4
      x SourceError            one object could not be read
        + SourceNotFound       "not found in bucket": permanent for that file
      x SinkError              carries sink, status, reason, error_class
        + TransientError       retried within the run (tenacity), then across runs with backoff
          - RateLimited        429; carries retry_after
          - ServerError        500 502 503 504 524
          - NetworkError       connection refused / reset
          - SinkTimeout        connect or read timeout
        + PermanentError       other 4xx, over a limit, unsupported kind: recorded, parked
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """The short classification recorded with every failure (ledger, logs, metrics)."""

    NETWORK = "network"
    TIMEOUT = "timeout"
    CLIENT = "client"
    SERVER = "server"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    UNSUPPORTED = "unsupported"
    INTERNAL = "internal"


class FilesyncError(Exception):
    """Unexpected filesync error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ConfigError(FilesyncError):
    """A setting is missing or malformed; the message names the variable."""


class LedgerUnavailable(FilesyncError):
    """PostgreSQL cannot be reached."""


class LedgerError(FilesyncError):
    """A database operation failed."""


class LeaseLost(LedgerError):
    """This worker no longer holds the file's lease; its result is not recorded."""


class SourceUnavailable(FilesyncError):
    """The source (bucket or folder) cannot be reached at all."""


class SourceError(FilesyncError):
    """An object could not be read from the source."""

    error_class: ErrorClass = ErrorClass.NETWORK
    transient = True


class SourceNotFound(SourceError):
    """The object is not in the bucket."""

    error_class = ErrorClass.NOT_FOUND
    transient = False


class SinkError(FilesyncError):
    """A destination refused or failed an operation."""

    error_class: ErrorClass = ErrorClass.INTERNAL
    transient = False

    def __init__(
        self,
        reason: str,
        *,
        sink: str = "",
        status: int | None = None,
        error_class: ErrorClass | None = None,
    ) -> None:
        self.reason = reason
        self.sink = sink
        self.status = status
        if error_class is not None:
            self.error_class = error_class
        prefix = f"{sink}: " if sink else ""
        suffix = f" (HTTP {status})" if status else ""
        super().__init__(f"{prefix}{reason}{suffix}")


class TransientError(SinkError):
    """Worth retrying: the same request may succeed later."""

    transient = True
    error_class = ErrorClass.SERVER


class RateLimited(TransientError):
    """The service asked us to slow down."""

    error_class = ErrorClass.RATE_LIMITED

    def __init__(self, reason: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **kw)  # type: ignore[arg-type]


class ServerError(TransientError):
    """The service failed (5xx, Cloudflare 524)."""

    error_class = ErrorClass.SERVER


class NetworkError(TransientError):
    """The connection failed or was reset."""

    error_class = ErrorClass.NETWORK


class SinkTimeout(TransientError):
    """The service did not answer in time."""

    error_class = ErrorClass.TIMEOUT


class PermanentError(SinkError):
    """Retrying the same request will fail the same way."""

    error_class = ErrorClass.CLIENT


def classify(exc: BaseException) -> tuple[ErrorClass, int | None, bool]:
    """(error class, HTTP status, transient?) for any exception the pipeline catches."""
    if isinstance(exc, SinkError):
        return exc.error_class, exc.status, exc.transient
    if isinstance(exc, SourceError):
        return exc.error_class, None, exc.transient
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT, None, True
    if isinstance(exc, ConnectionError | OSError):
        return ErrorClass.NETWORK, None, True
    return ErrorClass.INTERNAL, None, False
