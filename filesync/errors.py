"""Errors raised by filesync.

Drivers (psycopg, boto3, requests, tuspy, cloudinary) are translated into this tree at their edge,
so the pipeline decides what to do from the class alone::

    FilesyncError
      x ConfigError            bad or missing setting -> exit 2, before any work
      x LedgerUnavailable      PostgreSQL unreachable -> exit 3; the daemon keeps its schedule
      x LedgerError            any other database error
        + LeaseLost            the file's lease expired or moved: the mark is refused
          - RowChanged         the row changed while its bytes were sent: re-sent, replacing them
      x SourceUnavailable      the bucket cannot be reached at all -> exit 4
      x SourceError            one object could not be read (transient: a later try may work)
        + SourceNotFound       "not found in bucket": permanent for that file
        + SourceRefused        the bucket refused this object (4xx): permanent for that file
        + SourceDenied         credentials refused: the run stops reading, nothing is counted
      x SinkError              carries sink, status, reason, error_class
        + TransientError       retried within the run, then across runs with backoff
          - RateLimited        429; carries retry_after
          - ServerError        500 502 503 504 524
          - NetworkError       connection refused / reset
          - SinkTimeout        connect or read timeout
        + PermanentError       other 4xx: recorded on the transfer, parked
          - DestinationRefused credentials or quota: the destination is stopped for the run, nothing parked
          - Refused            the destination does not take this object (kind, type, bytes, pixels)
          - BodyEndedEarly     the source ended before its size: the object changed while read

`classify` is the one classification of any exception (ours, or a built-in OSError/TimeoutError);
`filesync.retry.RetryPolicy` turns it into the one decision: retry now, later, park, or stop.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """The process exit codes, documented in the README; scripts and cron wrappers rely on them."""

    OK = 0  # every due file was handled (copied or skipped with a reason)
    FILES_FAILED = 1  # the run finished, but some files failed (see the summary / `filesync status`)
    CONFIG = 2  # a setting is missing or malformed; nothing was done
    DATABASE = 3  # PostgreSQL could not be reached
    SOURCE = 4  # the bucket (source) could not be reached
    CHECK_FAILED = 5  # `filesync check`: a destination or the source failed its check
    CUT_OFF = 7  # --max-duration / --max-transfer reached: in-flight transfers finished, the rest is left due
    STOPPED = 6  # a destination or the source refused the setup (credentials, quota) or kept failing: stopped
    # for this run, no attempt counted against the files; the summary names it and the setting to check
    INTERRUPTED = 130  # stopped by SIGINT/SIGTERM before the backlog was done


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
    AUTH = "auth"
    QUOTA = "quota"
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


class RowChanged(LeaseLost):
    """The file's row changed (a new path) while its bytes were being sent: nothing is recorded as done,
    and the transfer is sent again, replacing what it left at the destination."""


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


class SourceRefused(SourceError):
    """The source refused this object for a reason another try will not change."""

    error_class = ErrorClass.CLIENT
    transient = False


class SourceDenied(SourceError):
    """The source refuses our credentials (expired or revoked key, a bucket policy): a setup problem, not
    this file's. The run stops reading and counts no attempt; `setting` names what to check."""

    error_class = ErrorClass.AUTH
    transient = False
    stops_destination = True

    def __init__(self, message: str, *, setting: str = "") -> None:
        self.setting = setting
        super().__init__(message + (f"; check {setting}" if setting else ""))


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


class BodyEndedEarly(PermanentError, SourceError):
    """The source stream ended before the bytes its size promised: the object changed while it was read.
    The one error for a short body, raised by the source reader and every sink's body helpers; a
    source error (the bytes are not there) that sending again will not change."""

    error_class = ErrorClass.INVALID
    transient = False

    def __init__(self, what: str, got: int, expected: int, *, sink: str = "") -> None:
        self.got, self.expected = got, expected
        super().__init__(f"{what} ended after {got} of the {expected} bytes expected ({expected - got} short)",
                         sink=sink)


class DestinationRefused(PermanentError):
    """The destination refuses the whole setup, not this file: credentials refused or expired, an account
    over its quota, a bucket that denies access. The policy stops sending to it for the rest of the run
    and counts no attempt against the files; `setting` names what to check."""

    error_class = ErrorClass.AUTH
    stops_destination = True

    def __init__(self, reason: str, *, setting: str = "", **kw: object) -> None:
        self.setting = setting
        super().__init__(reason + (f"; check {setting}" if setting else ""), **kw)  # type: ignore[arg-type]


class NameTaken(PermanentError):
    """Another file already holds this destination name (a template maps both to it): nothing is
    overwritten; the reason names both files."""

    error_class = ErrorClass.INVALID


class Refused(PermanentError):
    """The destination does not take this object (its kind, type, bytes or pixels): refused before any
    request, by the one check in `filesync.sinks.check_accepts`. `invalid`, like any file the run cannot
    send as it is; `unsupported` is kept for types no route names (skipped, not failed)."""

    error_class = ErrorClass.INVALID


def classify(exc: BaseException) -> tuple[ErrorClass, int | None, bool]:
    """(error class, HTTP status, transient?) for any exception: the one classification.

    Built-in timeouts and OS errors (a reset socket, a read that failed mid-stream) are transient
    everywhere: within a run and across runs. Anything else unknown is an internal error: not retried
    within the run, tried again in a later run, parked after the attempts run out."""
    if isinstance(exc, SinkError):
        return exc.error_class, exc.status, exc.transient
    if isinstance(exc, SourceError):
        return exc.error_class, None, exc.transient
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT, None, True
    if isinstance(exc, ConnectionError | OSError):
        return ErrorClass.NETWORK, None, True
    return ErrorClass.INTERNAL, None, False
