"""`filesync verify`: do the copies the ledger records still exist at their destinations?

Each check is one direct lookup (by remote id or name), never a listing, so a sample of a large
library is cheap. Drift is printed; with `repair` the drifted transfers are queued again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from filesync import sinks as sink_registry
from filesync.app import App
from filesync.errors import ConfigError, FilesyncError
from filesync.kinds import kind_of
from filesync.ledger import CopiedTransfer
from filesync.model import SourceObject
from filesync.retry import RetryPolicy

log = structlog.get_logger("filesync")
_LOOKUP = RetryPolicy(request_tries=3, max_wait=5)  # a lookup is cheap: a few quick tries


@dataclass(frozen=True)
class Drift:
    file_id: str
    sink: str
    reason: str


@dataclass
class VerifyResult:
    checked: int = 0
    drift: list[Drift] | None = None
    errors: list[Drift] | None = None
    repaired: int = 0
    not_configured: dict[str, int] = field(default_factory=dict)  # sink -> copies recorded, not checked


def _object(t: CopiedTransfer) -> SourceObject:
    mime = t.mime or "application/octet-stream"
    taken = None
    if t.date_taken:
        with contextlib.suppress(ValueError):
            taken = datetime.fromisoformat(t.date_taken)
    return SourceObject(file_id=t.file_id, path=t.path or "", size=t.size or 0, mime=mime, kind=kind_of(mime),
                        date_taken=taken, gps=t.gps)


def check_one(app: App, t: CopiedTransfer) -> str | None:
    """Why this copy drifted, or None when it is intact. The sink must be configured (routed)."""
    sink = app.sinks[t.sink]
    remote = _LOOKUP.call(lambda: sink.exists(_object(t), t.remote_id))
    if remote is None:
        return "missing at the destination"
    if t.bytes is not None and remote.size and remote.size != t.bytes:
        return f"size differs: {remote.size} bytes there, {t.bytes} sent"
    if t.checksum and remote.checksum and remote.checksum.lower() != t.checksum.lower():
        return "checksum differs"
    return None


def verify(app: App, *, sample: int | None = None, since: datetime | None = None, sink: str | None = None,
           repair: bool = False) -> VerifyResult:
    if sink is not None and sink not in sink_registry.registry():
        known = ", ".join(sorted(sink_registry.registry()))
        raise ConfigError(f"--sink {sink!r} is not a destination filesync knows (known: {known})")
    app.ledger.migrate()
    result = VerifyResult(drift=[], errors=[])
    assert result.drift is not None and result.errors is not None
    for t in app.ledger.copied_transfers(sample=sample, since=since, sink=sink):
        if t.sink not in app.sinks:  # no longer routed, or not configured here: nothing to compare with
            result.not_configured[t.sink] = result.not_configured.get(t.sink, 0) + 1
            continue
        result.checked += 1
        try:
            reason = check_one(app, t)
        except FilesyncError as exc:
            result.errors.append(Drift(t.file_id, t.sink, str(exc)))
            continue
        if reason is None:
            continue
        result.drift.append(Drift(t.file_id, t.sink, reason))
        log.warning("verify_drift", file_id=t.file_id, sink=t.sink, reason=reason, repair=repair)
        if repair:
            app.ledger.requeue_transfer(t.file_id, t.sink, f"verify: {reason}")
            result.repaired += 1
    return result
