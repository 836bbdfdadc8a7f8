"""Small immutable records passed between the ledger, sources, sinks and the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath


class Kind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    OTHER = "other"


#: Entry.metadata key of an object that is listed but cannot be copied; its value is the reason to record.
SKIP = "skip"


@dataclass(frozen=True)
class Entry:
    """One object as a listing reports it: what a catalog records without reading the object.

    `metadata` uses the app table's names where they apply (`dateTaken` as ISO 8601, `gpsCoordinates` as
    "lat,lon"), plus source-specific keys and `SKIP`.
    """

    key: str  # readable with stat/open, by this instance and by a new one (another process)
    size: int
    etag: str | None = None  # ETag or checksum: with size and modified, what tells a changed object
    content_type: str | None = None  # None when the listing does not say (S3 listings never do)
    modified: datetime | None = None  # timezone-aware
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SourceObject:
    """One file as the sinks see it: the app row's facts plus what the source told us."""

    file_id: str
    path: str
    size: int
    mime: str = "application/octet-stream"
    kind: Kind = Kind.OTHER
    date_taken: datetime | None = None
    gps: str | None = None
    etag: str | None = None
    width: int | None = None
    height: int | None = None
    ext_override: str | None = None  # a derived copy's extension (a HEIC sent as JPEG names itself .jpg)

    @property
    def ext(self) -> str:
        """The key's extension, lower case with its dot ('' when there is none)."""
        return self.ext_override if self.ext_override is not None else PurePosixPath(self.path).suffix.lower()

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def metadata(self) -> dict[str, str]:
        """The metadata every sink carries along, as strings."""
        meta = {"fileId": self.file_id, "path": self.path}
        if self.date_taken is not None:
            meta["dateTaken"] = self.date_taken.isoformat()
        if self.gps:
            meta["gpsCoordinates"] = self.gps
        return meta


@dataclass(frozen=True)
class RemoteObject:
    """What a sink holds after an upload: enough to find, show and verify it."""

    remote_id: str
    url: str | None
    size: int
    checksum: str | None = None
    existed: bool = False  # True when the sink already had it (idempotent repeat)
    owner: str | None = None  # the file id the destination's own metadata names, where it keeps one


@dataclass(frozen=True)
class FileTask:
    """A claimed ledger row: one app file to bring to every sink its route names."""

    file_id: str
    path: str | None
    date_taken: str | None  # as the app's table holds it; parsed (and validated) by the pipeline
    gps: str | None
    attempts: int
    done_sinks: frozenset[str] = frozenset()
    parked_sinks: dict[str, tuple[str, str]] = field(default_factory=dict)  # sink -> (error class, reason)
    replace_sinks: frozenset[str] = frozenset()  # transfers to send again over an older copy (row changed)
    resume_tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """Which due files a run takes (`filesync run` options). The defaults select every due file."""

    file_ids: frozenset[str] | None = None  # --file / --files-from
    path_globs: tuple[str, ...] = ()  # --path, rclone-style: `*` within a folder, `**` across folders
    since: datetime | None = None  # --since, on dateTaken
    until: datetime | None = None  # --until, on dateTaken (exclusive)
    sink: str | None = None  # --sink: only transfers to this destination
    limit: int | None = None  # --limit: files claimed at most

    def path_regex(self) -> str | None:
        """The globs as one anchored regular expression, understood alike by Python and PostgreSQL."""
        if not self.path_globs:
            return None
        return "^(" + "|".join(_glob_regex(g) for g in self.path_globs) + ")$"

    @property
    def narrows(self) -> bool:
        """True when some due files may be left out (the claim then filters)."""
        return bool(self.file_ids is not None or self.path_globs or self.since or self.until)


def _glob_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(glob[i] if glob[i].isalnum() or glob[i] in "/_ " else "\\" + glob[i])
            i += 1
    return "".join(out)


@dataclass
class ScanCounts:
    """What one `filesync scan` did to the catalog."""

    listed: int = 0
    added: int = 0
    changed: int = 0  # bytes or metadata changed: updated (bytes: copied again)
    gone: int = 0  # no longer in the source: kept in the catalog, not copied
    skipped: int = 0  # listed, but the source has no bytes to give (a Google Docs file)


@dataclass(frozen=True)
class Limits:
    """rclone's cut-offs: stop claiming past these, finish what is in flight, exit with CUT_OFF."""

    max_duration: float | None = None  # seconds
    max_bytes: int | None = None


@dataclass
class RunSummary:
    """Counts for one run; stored in the runs table and printed at the end."""

    run_id: int | None = None
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    retry_later: int = 0
    bytes: int = 0
    per_sink: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (file_id, sink, reason)
    skips: list[tuple[str, str]] = field(default_factory=list)  # (file_id, reason)
    deferred: int = 0  # handed back uncounted: a destination was stopped for the run
    rows_without_id: int = 0  # app rows not copied whose id is NULL: reported, never copied
    started_at: datetime | None = None
    finished_at: datetime | None = None
    paths: dict[str, str] = field(default_factory=dict)  # file id -> path, for files the summary names
    waiting: dict[str, datetime] = field(default_factory=dict)  # file id -> when it is due again
    retries: int = 0  # requests sent again within the run
    retry_passes: int = 0  # end-of-run passes over the files that failed transiently
    cut_off: str | None = None  # why --max-duration / --max-transfer stopped the run
    total_files: int = 0  # due when the run started
    dry_run: bool = False
    stopped: dict[str, str] = field(default_factory=dict)  # destination -> why it was stopped
    interrupted: bool = False

    def count(self, sink: str, outcome: str, n: int = 1) -> None:
        bucket = self.per_sink.setdefault(sink, {})
        bucket[outcome] = bucket.get(outcome, 0) + n
